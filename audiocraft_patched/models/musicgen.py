"""`MusicGen`: the user API, text (and audio prompt) in, audio out.

Mirrors `audiocraft/models/musicgen.py` and `genmodel.py` (audiocraft 1.3.0): `get_pretrained`,
`set_generation_params`, `set_custom_progress_callback`, `generate`, `generate_unconditional`,
`generate_continuation`, generation past `max_duration` by windows of `extend_stride`, and the
properties `sample_rate`, `frame_rate`, `audio_channels`, `max_duration`.

Beyond upstream, `generate` also takes `images=` and `audio_prompts=` (reference clips) for
models with image / CLAP audio conditioners, or `conditions=` for any attribute
(modules/conditioners/MULTIMODAL.md).
"""
from __future__ import annotations

import inspect
import time
import warnings
from contextlib import nullcontext
from typing import Any, Callable, Sequence

import torch

from ..data.audio_utils import convert_audio
from ..modules.conditioners import ConditioningAttributes
from ..modules.conditioners.attributes import build_attributes, set_column, text_attributes
from ..modules.conditioners.chroma import ChromaStemConditioner, melody_conditions, melody_window
from ..modules.conditioners.negative import negative_conditions
from ..modules.conditioners.hf_encoder import HFEncoderConditioner
from ..modules.errors import ValueAssertionError
from ..modules.weight_quant import DEFAULT_GROUP_SIZE, quantize_linears, quantize_transformer
from .devices import check_device
from .builders import get_debug_compression_model, get_debug_lm_model, get_wrapped_compression_model
from .encodec import CompressionModel
from .generation_params import check_generation_dict, check_generation_params, check_texts
from .lm import LMModel
from .loaders import load_compression_model, load_lm_model

_HF_MODEL_CHECKPOINTS_MAP = {
    "small": "facebook/musicgen-small",
    "medium": "facebook/musicgen-medium",
    "large": "facebook/musicgen-large",
    "melody": "facebook/musicgen-melody",
}


# Built by `MusicGen.get_pretrained` in memory, with no checkpoint files of their own.
IN_MEMORY_MODELS = ("debug", "default-zh")


def checkpoint_location(name: str) -> str:
    """Where the checkpoint files of model `name` are: a folder or hub id, as `models/loaders.py` resolves them.

    'default' is the embedded model's folder, upstream's short names ('small', ...) their hub ids;
    anything else is returned as given. Every verb that reads checkpoint files (generate, inspect,
    swap, align, compare-encoders) accepts the same names through this.
    """
    if name in IN_MEMORY_MODELS:
        raise ValueError(f"{name!r} is built in memory and has no checkpoint files; give a checkpoint folder, a hub "
                         "id in the local Hugging Face cache, or 'default' (the embedded model)")
    if name == "default":
        from ..default_model import default_model_dir

        return str(default_model_dir())
    if name in _HF_MODEL_CHECKPOINTS_MAP:
        warnings.warn(f"short name {name!r} is deprecated upstream; use {_HF_MODEL_CHECKPOINTS_MAP[name]!r}")
        return _HF_MODEL_CHECKPOINTS_MAP[name]
    return name


# Upstream's stride between windows, made for 30 s windows (12 s of each window is context).
UPSTREAM_EXTEND_STRIDE = 18.0


def default_extend_stride(max_duration: float) -> float:
    """Upstream's 18 s when it fits in the window, else the same share of it (60%: 3 s of a 5 s window)."""
    if UPSTREAM_EXTEND_STRIDE < max_duration:
        return UPSTREAM_EXTEND_STRIDE
    return round(max_duration * UPSTREAM_EXTEND_STRIDE / 30.0, 6)


class MusicGen:
    """MusicGen: a codec (`compression_model`) and an LM over its codes (`lm`).

    Args:
        name: the model's name, for display.
        compression_model: the audio codec.
        lm: the language model.
        max_duration: longest window the LM generates in one go (seconds); defaults to the
            training segment duration stored in the LM's config.
    """

    def __init__(self, name: str, compression_model: CompressionModel, lm: LMModel,
                 max_duration: float | None = None):
        self.name = name
        self.compression_model = compression_model.eval()
        self.lm = lm.eval()
        self.cfg: dict | None = getattr(lm, "cfg", None)
        if self.cfg is not None:
            self.compression_model = get_wrapped_compression_model(self.compression_model, self.cfg)
        if max_duration is None:
            if self.cfg is None:
                raise ValueError("max_duration is needed when the LM has no training config")
            max_duration = self.cfg["dataset"]["segment_duration"]
        self.max_duration: float = float(max_duration)
        self.device = next(iter(lm.parameters())).device
        # Seconds spent per stage by the last generate call: conditioning (and per conditioner,
        # 'conditioning.<attribute>': its encoder forward), lm, decode.
        self.timings: dict[str, float] = {}
        self._progress_callback: Callable[[int, int], None] | None = None
        self.set_generation_params(duration=min(15.0, self.max_duration))

    @property
    def frame_rate(self) -> float:
        return self.compression_model.frame_rate

    @property
    def sample_rate(self) -> int:
        return self.compression_model.sample_rate

    @property
    def audio_channels(self) -> int:
        return self.compression_model.channels

    @staticmethod
    def get_pretrained(name: str = "facebook/musicgen-small", device: str | torch.device | None = None,
                       dtype: torch.dtype | str | None = None) -> "MusicGen":
        """Load a model: 'debug', 'default' (the embedded model), a folder, or a hub id in the local cache.

        Args:
            name: what to load.
            device: 'cpu', 'cuda', ...; default: cuda when available.
            dtype: run the LM and its text encoders in this dtype (e.g. torch.bfloat16), see `set_dtype`.
        """
        if device is None:
            device = "cuda" if torch.cuda.device_count() else "cpu"
        check_device(device)  # a clear error naming the devices this torch has, before any loading
        model = MusicGen._load(name, device)
        if dtype is not None:
            model.set_dtype(dtype)
        return model

    @staticmethod
    def _load(name: str, device: str | torch.device) -> "MusicGen":
        if name == "debug":
            return MusicGen(name, get_debug_compression_model(device), get_debug_lm_model(device), max_duration=30)
        if name == "default-zh":  # the default LM and codec, with the Chinese-aligned text conditioner
            from ..default_model import default_zh_parts
            from ..modules.conditioners.hf_adapter import HFAdapterConditioner

            folder, options, state, tokenizer = default_zh_parts()
            model = MusicGen._load("default", device)
            text = HFAdapterConditioner(name=str(folder), output_dim=model.lm.dim, device=device, **options)
            text.tokenizer = tokenizer  # MiniLM's, with the Chinese characters added
            text.load_state_dict(state)
            model.lm.condition_provider.conditioners["description"] = text.eval()
            model.name = name
            return model
        name = checkpoint_location(name)
        lm = load_lm_model(name, device=device)
        compression_model = load_compression_model(name, device=device)
        for conditioner in lm.condition_provider.conditioners.values():
            if isinstance(conditioner, ChromaStemConditioner):
                conditioner.set_match_len(True)  # as upstream's get_pretrained: melodies loop to the training length
        return MusicGen(name, compression_model, lm)

    def set_dtype(self, dtype: torch.dtype | str) -> "MusicGen":
        """Cast the LM, its conditioners and their (frozen) encoders to `dtype`; the codec stays float32.

        bfloat16 roughly halves the weight traffic of a generation step, which is what a step
        costs on CPU; tokens then differ from float32 ones now and then (sampling itself runs in
        float32). float16 is meant for GPUs.
        """
        if isinstance(dtype, str):
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype) or \
                getattr(torch, dtype, None)
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
        self.lm.to(dtype)
        # Frozen encoders are not submodules and keep their dtype under `.to()` (as upstream's T5
        # under `lm.half()`): each conditioner casts its own.
        for conditioner in self.lm.condition_provider.conditioners.values():
            conditioner.set_dtype(dtype)
        return self

    def quantize(self, mode: str, include_text_encoder: bool = False,
                 group_size: int = DEFAULT_GROUP_SIZE) -> "MusicGen":
        """Quantization of the LM's transformer, in place (`modules/weight_quant.py`).

        'int8': one scale per output channel; 'int4': a scale and zero per `group_size` inputs
        (default 128, which must divide the layers' widths). Both are weight-only: activations keep
        the compute dtype (`set_dtype`). 'w8a8': int8's weights, and each product's input rounded to
        int8 per row as well, for `torch._int_mm` (fast only with AVX-512: elsewhere it warns; more
        error). 'int8-dynamic': int8's weights with torch.ao's dynamic int8 activations (7 bits, one
        scale and zero point per product input), fbgemm's kernel: the fastest on AVX2 CPUs, in any
        compute dtype. Below AVX-512, int8/int4 want `set_dtype('bf16')` first (float32 activations
        take torch's slow path there; it warns). Embeddings, output heads, conditioner projections and
        the codec stay dense.
        `include_text_encoder` also quantizes the frozen text encoders' Linears (in memory only:
        frozen encoders are not part of checkpoints). `audiocraft_patched.quantize.save_quantized`
        writes the result as a checkpoint folder.
        """
        quantize_transformer(self.lm.transformer, mode, group_size)
        if include_text_encoder:
            for conditioner in self.lm.condition_provider.conditioners.values():
                if isinstance(conditioner, HFEncoderConditioner):
                    quantize_linears(conditioner.encoder, mode, group_size)
                    conditioner.refresh()  # new weights: a new embedding-cache fingerprint
        return self

    def compile_step(self, enable: bool = True) -> bool:
        """Compile the LM's one-position decode step with `torch.compile` (`LMModel.compile_step`).

        Opt-in: the first generation of a batch size pays the compilation (10 s to 2 min for
        musicgen-small on 2 cores), later ones are faster (bench/README.md has the rows). Without
        a C++ compiler it warns once and stays eager. Returns whether steps will be compiled.
        """
        return self.lm.compile_step(enable)

    def set_text_encoder(self, name_or_dir: str, attribute: str = "description", keep_projection: str | bool = "auto",
                         seed: int | None = 0, **kwargs):
        """Replace the text conditioner `attribute` by one on another Hugging Face encoder.

        Args:
            name_or_dir: hub id (from the local cache when offline) or folder of the new encoder.
            attribute: which text condition to swap ('description' in MusicGen).
            keep_projection: 'auto' keeps `output_proj` when the widths match, True insists (error
                otherwise), False always makes a new one.
            seed: seed of a new projection's initialisation (None: the global RNG).
            **kwargs: options of `HFEncoderConditioner` (pooling, layer, max_length, prompt_template,
                dtype, finetune, ...); `word_dropout` defaults to the old conditioner's.
        Returns:
            The new conditioner, already in place; its `projection_origin` is 'kept' or 'new'.
        """
        from ..modules.conditioners.encoder_swap import swapped_conditioner

        provider = self.lm.condition_provider
        if attribute not in provider.conditioners:
            raise KeyError(f"this model has no text condition {attribute!r}; it has {sorted(provider.conditioners)}")
        old = provider.conditioners[attribute]
        entry = old.config()
        kwargs.setdefault("word_dropout", entry[entry["model"]].get("word_dropout", 0.0))
        new = swapped_conditioner(name_or_dir, old.output_proj.out_features, old.output_proj.state_dict(),
                                  keep_projection, seed, device=self.device, **kwargs)
        new.to(old.output_proj.weight.device).train(old.training)
        provider.conditioners[attribute] = new
        return new

    def set_generation_params(self, use_sampling: bool = True, top_k: int = 250, top_p: float = 0.0,
                              temperature: float = 1.0, duration: float = 30.0, cfg_coef: float = 3.0,
                              two_step_cfg: bool = False, extend_stride: float | None = None):
        """Sampling settings for the next calls (upstream's defaults).

        Args:
            use_sampling: sample (True) or take the argmax (False).
            top_k, top_p: keep the k best tokens / the nucleus of probability p (top_p wins if > 0).
            temperature: softmax temperature.
            duration: seconds of audio to generate; past `max_duration`, windows overlap.
            cfg_coef: classifier-free guidance coefficient.
            two_step_cfg: run the unconditional batch separately.
            extend_stride: seconds to advance between windows when `duration > max_duration`; None:
                upstream's 18 s when it is shorter than `max_duration`, else `default_extend_stride`.
        """
        if extend_stride is None:
            extend_stride = default_extend_stride(self.max_duration)
        check_generation_params(use_sampling=use_sampling, top_k=top_k, top_p=top_p, temperature=temperature,
                                cfg_coef=cfg_coef, two_step_cfg=two_step_cfg, duration=duration,
                                extend_stride=extend_stride, frame_rate=self.frame_rate,
                                max_duration=self.max_duration)
        self.extend_stride = extend_stride
        self.duration = duration
        self.generation_params = {"use_sampling": use_sampling, "temp": temperature, "top_k": top_k,
                                  "top_p": top_p, "cfg_coef": cfg_coef, "two_step_cfg": two_step_cfg}

    def set_custom_progress_callback(self, progress_callback: Callable[[int, int], None] | None = None):
        """Call `progress_callback(generated_steps, total_steps)` during generation."""
        self._progress_callback = progress_callback

    def generate_unconditional(self, num_samples: int, progress: bool = False, return_tokens: bool = False):
        """Audio [B, C, T] from no text (and its codes if `return_tokens`)."""
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        return self._generate(self._text_attributes([None] * num_samples), None, progress, return_tokens)

    def generate(self, descriptions: Sequence[str | None] | None = None, progress: bool = False,
                 return_tokens: bool = False, *, images: Any = None, audio_prompts: Any = None,
                 audio_prompt_sample_rate: int | None = None, conditions: Sequence[Any] | None = None,
                 negative_prompts: Sequence[str | None] | None = None):
        """Audio [B, C, T] for a batch of descriptions (`None` = unconditional row), images or reference clips.

        `generate(descriptions)` is upstream's call. The keyword arguments need a model with the
        matching conditioner; every given list has one entry per sample, None meaning "absent"
        (the null condition).

        Args:
            descriptions: texts.
            progress: print (or report through the callback) the generation progress.
            return_tokens: also return the codes [B, K, T].
            images: for the model's image conditioner: file paths, PIL images or tensors [C, H, W]
                (uint8, or float in [0, 1]), or one [B, C, H, W] tensor.
            audio_prompts: for the model's CLAP audio conditioner: reference clips whose style
                conditions the music (they are not continued; see `generate_continuation`):
                WAV paths, tensors [C, T], (tensor, sample_rate) pairs, or one [B, C, T] tensor.
            audio_prompt_sample_rate: sample rate of tensor audio prompts (Hz).
            conditions: instead of the above, per sample a `ConditioningAttributes` or a dict
                {attribute name: value} (e.g. {'description': 'calm', 'image': 'cat.png'}).
            negative_prompts: one text (or None) per sample, encoded in place of classifier-free
                guidance's empty null text: generation steers away from it (`modules/conditioners/negative.py`).
        """
        if descriptions is not None and conditions is None:
            descriptions = self._check_descriptions(descriptions)
        attributes = build_attributes(self.lm.condition_provider, descriptions, images, audio_prompts,
                                      audio_prompt_sample_rate, conditions)
        return self._generate(attributes, None, progress, return_tokens, self._nulls(attributes, negative_prompts))

    def generate_continuation(self, prompt: torch.Tensor, prompt_sample_rate: int,
                              descriptions: Sequence[str | None] | None = None, progress: bool = False,
                              return_tokens: bool = False, *, negative_prompts: Sequence[str | None] | None = None):
        """Continue audio `prompt` [B, C, T] (or [C, T]) at `prompt_sample_rate`; negative_prompts as in generate."""
        if prompt.dim() == 2:
            prompt = prompt[None]
        if prompt.dim() != 3:
            raise ValueError(f"prompt must be [B, C, T] or [C, T], got shape {tuple(prompt.shape)}")
        prompt = convert_audio(prompt, prompt_sample_rate, self.sample_rate, self.audio_channels)
        if descriptions is None:
            descriptions = [None] * len(prompt)
        descriptions = self._check_descriptions(descriptions)
        if len(descriptions) != len(prompt):
            raise ValueAssertionError(f"{len(descriptions)} descriptions for {len(prompt)} prompts")
        attributes = self._text_attributes(descriptions)
        return self._generate(attributes, prompt, progress, return_tokens, self._nulls(attributes, negative_prompts))

    def generate_with_chroma(self, descriptions: Sequence[str | None], melody_wavs: Any, melody_sample_rate: int,
                             progress: bool = False, return_tokens: bool = False, *, melody_stems: str | None = None,
                             negative_prompts: Sequence[str | None] | None = None):
        """Audio [B, C, T] following the melody of `melody_wavs` and the texts (melody checkpoints only).

        Args:
            descriptions: one text (or None) per melody.
            melody_wavs: [B, C, T], [C, T] for one sample, or a list of [C, T] (None: no melody).
            melody_sample_rate: their sample rate (Hz).
            progress, return_tokens, negative_prompts: as in `generate` (a negative prompt's null keeps no melody).
            melody_stems: 'demucs' (upstream's way: drums and bass removed first; needs demucs and
                its weights on this machine) or 'full_mix' (the chroma of the whole mix: an
                approximation); None keeps the conditioner's setting ('demucs' unless changed).
        """
        provider = self.lm.condition_provider
        names = self._melody_attributes()
        if len(names) != 1:
            have = {k: type(v).__name__ for k, v in provider.conditioners.items()}
            raise ValueError(f"{self.name} is not a melody model (it has no chroma conditioner: {have}); use a "
                             "musicgen-melody checkpoint, or generate() without a melody")
        descriptions = self._check_descriptions(descriptions)
        melodies = melody_conditions(melody_wavs, melody_sample_rate, self.sample_rate, self.audio_channels,
                                     self.device)
        if len(melodies) != len(descriptions):
            raise ValueError(f"{len(descriptions)} descriptions for {len(melodies)} melodies: give one of each per "
                             "sample (None for an absent one)")
        attributes = self._text_attributes(descriptions)
        set_column(attributes, "wav", names[0], melodies)
        nulls = self._nulls(attributes, negative_prompts)
        with provider.conditioners[names[0]].using_stems(melody_stems):
            return self._generate(attributes, None, progress, return_tokens, nulls)

    def _melody_attributes(self) -> list[str]:
        """Names of the model's melody (chroma) conditions: ['self_wav'] for melody checkpoints."""
        return [name for name, c in self.lm.condition_provider.conditioners.items()
                if isinstance(c, ChromaStemConditioner)]

    @staticmethod
    def _check_descriptions(descriptions) -> list[str | None]:
        return check_texts(descriptions)  # not a str/bytes/dict, str or None items, valid Unicode

    def _text_attributes(self, descriptions: list[str | None]) -> list[ConditioningAttributes]:
        return text_attributes(self.lm.condition_provider, descriptions)

    def _nulls(self, attributes: list[ConditioningAttributes],
               negative_prompts: Sequence[str | None] | None) -> list[ConditioningAttributes] | None:
        """CFG's null conditions carrying the negative prompts (None without them: the LM's own empty nulls)."""
        if negative_prompts is None:
            return None
        negatives = check_texts(negative_prompts, "negative_prompts")
        if "null_conditions" not in inspect.signature(type(self.lm).generate).parameters:
            raise ValueError(f"negative prompts need an LM that takes null conditions; {type(self.lm).__name__} "
                             "(MAGNeT's iterative decoding) does not")
        return negative_conditions(self.lm.condition_provider, attributes, negatives)

    def _generate(self, attributes: list[ConditioningAttributes], prompt: torch.Tensor | None, progress: bool,
                  return_tokens: bool, nulls: list[ConditioningAttributes] | None = None):
        self.timings = {}
        prompt_tokens = None
        if prompt is not None:
            with torch.no_grad():
                prompt_tokens, scale = self.compression_model.encode(prompt.to(self.device))
            if scale is not None:
                raise RuntimeError("codecs that renormalize audio cannot prompt the LM")
        tokens = self._generate_tokens(attributes, prompt_tokens, progress, nulls)
        start = time.perf_counter()
        audio = self.generate_audio(tokens)
        self.timings["decode"] = time.perf_counter() - start
        return (audio, tokens) if return_tokens else audio

    def _generate_tokens(self, attributes: list[ConditioningAttributes], prompt_tokens: torch.Tensor | None,
                         progress: bool = False, nulls: list[ConditioningAttributes] | None = None) -> torch.Tensor:
        """Codes [B, K, duration * frame_rate], in windows of max_duration when longer (`nulls`: CFG's, see _nulls)."""
        # generation_params is a public dict: check what will be used, not only what was set.
        check_generation_dict(self.generation_params, duration=self.duration, extend_stride=self.extend_stride,
                              frame_rate=self.frame_rate, max_duration=self.max_duration)
        total_len = int(self.duration * self.frame_rate)
        max_prompt_len = int(min(self.duration, self.max_duration) * self.frame_rate)
        if prompt_tokens is not None and prompt_tokens.shape[-1] > max_prompt_len:
            raise ValueError(f"the prompt ({prompt_tokens.shape[-1] / self.frame_rate:.2f} s) is longer than the "
                             f"audio to generate ({min(self.duration, self.max_duration):.2f} s)")
        done = 0  # timesteps generated by earlier windows

        def report(generated: int, to_generate: int):
            if self._progress_callback is not None:
                self._progress_callback(generated + done, to_generate)
            else:
                # Flushed: a terminal's stdout is line-buffered, and "\r" alone would show nothing until the end.
                print(f"{generated + done: 6d} / {to_generate: 6d}", end="\r", flush=True)

        callback = report if progress else None
        autocast = (torch.autocast(self.device.type, dtype=torch.float16) if self.device.type == "cuda"
                    else nullcontext())
        provider = self.lm.condition_provider
        provider.reset_timings()  # it times its own tokenizing and each conditioner's forward
        lm_seconds = 0.0

        negative = {} if nulls is None else {"null_conditions": nulls}

        def run(prompt, max_gen_len):
            nonlocal lm_seconds
            start = time.perf_counter()
            with autocast:
                out = self.lm.generate(prompt, attributes, callback=callback, max_gen_len=max_gen_len,
                                       **self.generation_params, **negative)
            lm_seconds += time.perf_counter() - start
            return out

        if self.duration <= self.max_duration:
            tokens = run(prompt_tokens, total_len)
        else:
            stride = int(self.frame_rate * self.extend_stride)
            chunks = [] if prompt_tokens is None else [prompt_tokens]
            prompt_len = 0 if prompt_tokens is None else prompt_tokens.shape[-1]
            names = self._melody_attributes()
            melodies = [{name: c for name, c in sample.wav.items() if name in names}
                        for sample in attributes]  # the whole melodies; each window takes its part
            while done + prompt_len < total_len:
                window = min(self.duration - done / self.frame_rate, self.max_duration)
                for sample, whole in zip(attributes, melodies):
                    for name, melody in whole.items():
                        if melody is not None and int(melody.length.reshape(-1)[0]) > 0:
                            sample.wav[name] = melody_window(melody, done / self.frame_rate, self.max_duration,
                                                             self.sample_rate)
                tokens = run(prompt_tokens, int(window * self.frame_rate))
                chunks.append(tokens if prompt_tokens is None else tokens[..., prompt_tokens.shape[-1]:])
                prompt_tokens = tokens[..., stride:]
                prompt_len = prompt_tokens.shape[-1]
                done += stride
            tokens = torch.cat(chunks, dim=-1)
        conditioning = sum(provider.timings.values())
        self.timings.update(conditioning=conditioning, lm=lm_seconds - conditioning)
        self.timings.update({f"conditioning.{name}": t for name, t in provider.timings.items() if name != "tokenize"})
        return tokens

    def generate_stream(self, descriptions: Sequence[str | None], chunk_seconds: float = 1.0,
                        context_seconds: float = 1.0, lookahead_seconds: float = 0.2,
                        first_chunk_seconds: float | None = 0.25):
        """Yield audio chunks [B, C, samples] while the tokens are generated (`models/stream.py`):
        joined, they are `generate(descriptions)`'s audio within a measured bound. One window; the
        first chunk is `first_chunk_seconds` long (None: `chunk_seconds`), so that audio starts early."""
        from .stream import generate_stream

        return generate_stream(self, descriptions, chunk_seconds, context_seconds, lookahead_seconds,
                               first_chunk_seconds)

    def generate_audio(self, gen_tokens: torch.Tensor) -> torch.Tensor:
        """Decode codes [B, K, T] to audio [B, C, T * hop]."""
        if gen_tokens.dim() != 3:
            raise ValueError(f"tokens must be [B, K, T], got shape {tuple(gen_tokens.shape)}")
        with torch.no_grad():
            return self.compression_model.decode(gen_tokens, None)

