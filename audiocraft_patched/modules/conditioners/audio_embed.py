"""Reference-audio conditioning ("music like this clip"): the CLAP audio tower as a MusicGen conditioner.

Upstream's counterpart is `CLAPEmbeddingConditioner` (`audiocraft/modules/conditioners.py`,
audiocraft 1.3.0), which runs the laion_clap package on a `JointEmbedCondition`. Here
`CLAPAudioConditioner` (`model: clap_audio`) runs the Hugging Face `ClapModel` audio tower on
upstream's `WavCondition` (the `wav` kind of `ConditioningAttributes`, as musicgen-melody's
chroma): waveforms at any sample rate, resampled with `data.audio_utils.convert_audio` (the
sinc resampler that matches julius) to the rate of the model's feature extractor. A row of
length 0 is the null condition of classifier-free guidance.

    conditioners:
      audio: {model: clap_audio, clap_audio: {name: <ClapModel folder or hub id>, pooling: projected}}
    fuser: {cross: [description, audio], ...}

A new CLAP conditioner on a released MusicGen needs training (its `output_proj` is random);
zero-shot use through an aligned CLAP text conditioner needs none (see `vision.py`,
`add_cross_modal_conditioner`).
"""
from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...data.audio_utils import convert_audio
from .base import WavCondition, WaveformConditioner
from .hf_family import quiet_transformers, resolve_pretrained
from .registry import register_encoder
from .vision import TowerConditioner, load_tower, tower_config

AUDIO_POOLINGS = ("projected", "pooled", "none")
# The feature extractor picks random crops of long clips (and, in 'fusion' mode, marks a random
# clip of each batch as long). Conditioning must not depend on luck or on the rest of the
# batch, so clips are featurized one at a time under this fixed seed.
FEATURE_SEED = 0


def audio_condition(wav: torch.Tensor, sample_rate: int, path: str | None = None,
                    where: str = "audio prompt") -> WavCondition:
    """One reference clip [C, T] (or [T]) at `sample_rate` -> the `WavCondition` of one sample.

    Raises:
        ValueError: for an empty clip, a non-float or non-finite one, a bad shape or rate.
    """
    if not isinstance(wav, torch.Tensor):
        raise TypeError(f"{where}: expected a waveform tensor [C, T], got {type(wav).__name__}")
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2:
        raise ValueError(f"{where}: a waveform must be [C, T] (or [T] for mono), got shape {tuple(wav.shape)}")
    if wav.shape[0] == 0 or wav.shape[1] == 0:
        raise ValueError(f"{where} is empty (shape {tuple(wav.shape)}): give a clip with at least one channel and "
                         "some samples, or None for no reference audio")
    if not wav.dtype.is_floating_point:
        raise ValueError(f"{where}: the waveform must be floating point in [-1, 1], got {wav.dtype}; convert PCM "
                         "integers with audiocraft_patched.data.audio_utils.f32_pcm")
    if not torch.isfinite(wav).all():
        raise ValueError(f"{where}: the waveform holds NaN or infinite values")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or sample_rate <= 0:
        raise ValueError(f"{where}: sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    return WavCondition(wav[None], torch.tensor([wav.shape[-1]]), [int(sample_rate)], [path], [0.0])


def read_audio_prompt(item: Any, sample_rate: int | None = None, where: str = "audio prompt") -> WavCondition | None:
    """A WAV path, a tensor [C, T] (at `sample_rate`), a (tensor, rate) pair, a WavCondition or None."""
    if item is None or isinstance(item, WavCondition):
        return item
    if isinstance(item, (str, Path)):
        from ...data.audio import audio_read

        path = Path(item).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{where}: no such audio file: {str(path)!r}")
        wav, rate = audio_read(path)
        return audio_condition(wav, rate, path=str(path), where=f"{where} ({path})")
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], torch.Tensor):
        return audio_condition(item[0], item[1], where=where)
    if isinstance(item, torch.Tensor):
        if sample_rate is None:
            raise ValueError(f"{where} is a tensor: also give its sample rate (audio_prompt_sample_rate=...)")
        return audio_condition(item, sample_rate, where=where)
    raise TypeError(f"{where}: expected a WAV file path, a tensor [C, T], a (tensor, sample_rate) pair or None, "
                    f"got {type(item).__name__}")


def as_audio_prompt_list(prompts: Any) -> list[Any]:
    """The per-sample list behind `audio_prompts=`: a list as is, a [B, C, T] tensor split, one clip wrapped."""
    if isinstance(prompts, torch.Tensor) and prompts.dim() == 3:
        return list(prompts)
    if isinstance(prompts, list):
        return list(prompts)
    return [prompts]


@register_encoder("clap_audio")
class CLAPAudioConditioner(TowerConditioner, WaveformConditioner):
    """Reference-audio conditioner on the audio tower of a Hugging Face CLAP model.

    Loads the audio tower from a `ClapModel` folder (or a `ClapAudioModel(WithProjection)`
    one) and the feature extractor saved beside it. Reads `WavCondition`s (collated mono by the
    provider); each clip is resampled to the extractor's rate, then cut or padded to its
    `max_length_s` window as CLAP was trained (a fixed-seed crop of long clips, or the
    fusion of a global view and three crops for models with `enable_fusion`).

    Args:
        name: hub id or folder.
        output_dim: LM width.
        pooling: 'projected' (the joint audio-text embedding, [B, 1, projection_dim]), 'pooled'
            (the tower's pooled state, [B, 1, hidden]) or 'none' (its final feature map as
            tokens, [B, F * T, hidden]).
        normalize: L2-normalize the pooled vector; None: True for 'projected' (CLAP compares
            embeddings by cosine, and `get_audio_features` normalizes), else False.
        adapter: optional `adapters.py` config between the features and `output_proj`.
        finetune: train the tower too (its weights then go into checkpoints).
        device: where the tower runs.
    """

    def __init__(self, name: str, output_dim: int, pooling: str = "projected", normalize: bool | None = None,
                 adapter: dict | None = None, finetune: bool = False, device: str | torch.device = "cpu"):
        import transformers

        if pooling not in AUDIO_POOLINGS:
            raise ValueError(f"pooling must be one of {AUDIO_POOLINGS}, got {pooling!r}")
        name = str(name)
        config, audio = tower_config(name, "audio_config")
        if config.model_type not in ("clap", "clap_audio_model"):
            raise ValueError(f"{name!r} is a {config.model_type!r} model, not CLAP; the clap_audio conditioner needs "
                             "a ClapModel (or ClapAudioModel) folder")
        plain_tower = config.model_type == "clap_audio_model" and "ClapAudioModel" in (config.architectures or [])
        if plain_tower and pooling == "projected":
            raise ValueError(f"{name!r} holds a ClapAudioModel without its projection; pooling='projected' needs a "
                             "ClapModel or ClapAudioModelWithProjection folder")
        cls = transformers.ClapAudioModel if plain_tower else transformers.ClapAudioModelWithProjection
        encoder = load_tower(name, cls, audio, "Pass the folder of the whole ClapModel, as save_pretrained writes it.")
        width = audio.projection_dim if pooling == "projected" else audio.hidden_size
        with quiet_transformers():
            try:
                extractor = resolve_pretrained(name, transformers.AutoFeatureExtractor)
            except OSError as exc:
                raise OSError(f"{name!r} has no usable audio feature extractor ({exc}); the folder needs the "
                              "preprocessor_config.json that ClapFeatureExtractor writes with save_pretrained") from exc
        normalize = pooling == "projected" if normalize is None else normalize
        super().__init__(name, output_dim, encoder, width, pooling, normalize, adapter, finetune, device)
        self.extractor = extractor
        self.sample_rate = int(extractor.sampling_rate)
        self.truncation = "fusion" if getattr(audio, "enable_fusion", False) else "rand_trunc"

    def _featurize(self, clip: np.ndarray) -> dict[str, torch.Tensor]:
        state = np.random.get_state()
        np.random.seed(FEATURE_SEED)
        try:
            return self.extractor(clip, sampling_rate=self.sample_rate, truncation=self.truncation, return_tensors="pt")
        finally:
            np.random.set_state(state)  # leave the caller's numpy RNG as it was

    def tokenize(self, x: WavCondition) -> dict[str, Any]:
        """Collated clips (wav [B, C, T], lengths, rates) -> extractor features of the non-empty ones."""
        if not isinstance(x, WavCondition):
            raise TypeError(f"the clap_audio conditioner reads WavConditions, got {type(x).__name__}")
        lengths = [int(n) for n in x.length.reshape(-1).tolist()]
        present = [n > 0 for n in lengths]
        features, longer = [], []
        for i, length in enumerate(lengths):
            if not length:
                continue
            clip = convert_audio(x.wav[i, :, :length].float().cpu(), x.sample_rate[i], self.sample_rate, 1)[0]
            if clip.numel() == 0:
                raise ValueError(f"audio condition {i} is too short: {length} samples at {x.sample_rate[i]} Hz leave "
                                 f"nothing at the model's {self.sample_rate} Hz")
            out = self._featurize(clip.numpy())
            features.append(out["input_features"])
            longer.append(out["is_longer"])
        inputs = {}
        if features:
            inputs = {"input_features": torch.cat(features).to(self.device),  # [n, 1 or 4, frames, mels]
                      "is_longer": torch.cat(longer).to(self.device)}  # [n, 1]
        return {"inputs": inputs, "present": torch.tensor(present, dtype=torch.bool, device=self.device)}

    def blank_inputs(self) -> dict[str, torch.Tensor]:
        out = self._featurize(np.zeros(self.sample_rate, dtype=np.float32))
        return {"input_features": out["input_features"], "is_longer": out["is_longer"]}

    def run_tower(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features -> [n, L, dim] (L = 1 unless pooling is 'none')."""
        features = inputs["input_features"].to(next(self.encoder.parameters()).dtype)
        is_longer = inputs["is_longer"]
        if self.pooling == "projected":
            return self.encoder(input_features=features, is_longer=is_longer).audio_embeds.unsqueeze(1)
        tower = getattr(self.encoder, "audio_model", self.encoder)  # inside ClapAudioModelWithProjection
        out = tower(input_features=features, is_longer=is_longer)
        if self.pooling == "pooled":
            return out.pooler_output.unsqueeze(1)
        return out.last_hidden_state.flatten(2).transpose(1, 2)  # [n, D, F', T'] -> [n, F' * T', D]
