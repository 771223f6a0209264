"""`HFEncoderConditioner`: any Hugging Face text encoder as MusicGen's text conditioner.

Replaces upstream's `T5Conditioner` (`audiocraft/modules/conditioners.py`, 1.3.0), which accepts
ten whitelisted T5 names, downloads them at run time and keeps a hand-written table of widths.
Here `name` is a hub id (resolved from the local Hugging Face cache when offline) or a local
folder; an encoder family (`hf_family.py`: T5/mT5/UMT5, BERT-like encoders, sentence-transformers
folders, CLIP and CLAP text towers, decoder-only LLMs) loads it, and the width comes from the
model's config. With the defaults on a T5 (last hidden state, no pooling, float32) the outputs
equal upstream's T5Conditioner on the same weights, for texts up to the tokenizer's own length
limit (512 tokens for T5): longer ones are truncated with a warning, where upstream encodes them
whole at a memory cost that grows with the square of their length (`max_length=0` lifts it).

Upstream's contract is kept:
- `tokenize()` does the CPU work up to the host-to-device copy, `forward()` the compute;
- embeddings are zero at padding; an empty or `None` text gives an all-zero mask row (the CFG null);
- a frozen encoder is not a submodule, so its weights stay out of `state_dict()` (only
  `output_proj` is saved); with `finetune=True` it is, and they go in.
"""
from __future__ import annotations

import random
import warnings
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from .base import ConditionType, TextConditioner
from .cache import TextEmbeddingCache, cache_key, encoder_fingerprint, model_tensors, weights_state
from .hf_family import EncoderFamily, FrozenEncoderMixin, find_family, resolve_pretrained
from .projection import project_features
from .registry import register_encoder
# Encoder families register themselves when imported. To add one, write a short file like
# hf_clap.py and import its class here (one line).
from .hf_bert import EncoderOnlyFamily  # noqa: F401
from .hf_clap import CLAPTextFamily  # noqa: F401
from .hf_clip import CLIPTextFamily  # noqa: F401
from .hf_decoder import DecoderOnlyFamily  # noqa: F401
from .hf_sentence_transformers import SentenceTransformersFamily  # noqa: F401
from .hf_t5 import Seq2SeqEncoderFamily  # noqa: F401

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# A tokenizer's `model_max_length` above this is "unset" (transformers uses 1e30) or too long to
# be a safe default; it is then not used.
SANE_TOKENIZER_LIMIT = 2**17
# The names upstream's T5Conditioner accepts: a config it can read names one of them under `model: t5`.
UPSTREAM_T5_NAMES = ("t5-small", "t5-base", "t5-large", "t5-3b", "t5-11b", "google/flan-t5-small",
                     "google/flan-t5-base", "google/flan-t5-large", "google/flan-t5-xl", "google/flan-t5-xxl")


def tokenizer_limit(tokenizer) -> int | None:
    """The tokenizer's own `model_max_length` (512 for T5) when it is a real, sane number."""
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 1 <= limit <= SANE_TOKENIZER_LIMIT else None


def load_text_encoder(name: str, pooling: str | None = None, dtype: str | None = None):
    """Load (family, tokenizer, text model) for a hub id or local folder.

    Args:
        name: hub id or folder.
        pooling: the pooling it will be used with (CLIP/CLAP load their projection for 'projected');
            None: the family's default.
        dtype: weights dtype ('float32', 'bfloat16', 'float16'); None: float32.
    """
    from transformers import AutoConfig

    config = resolve_pretrained(name, AutoConfig)
    family: EncoderFamily = find_family(name, config)(name, config)
    pooling = family.default_pooling() if pooling is None else pooling
    if pooling not in family.poolings:
        raise ValueError(f"pooling={pooling!r} is not available for {name!r} ({family.name} family); "
                         f"use one of {family.poolings}")
    tokenizer = family.load_tokenizer()
    model = family.load_model(pooling, DTYPES[dtype or "float32"])
    return family, tokenizer, model


class TextInputs(dict):
    """What `HFEncoderConditioner.tokenize` returns: the tokenizer outputs, as upstream's dict.

    The embedding cache's part is kept in attributes, not among the model's input tensors:
    `cache_key` (None when the cache is off) and, on a hit, `cached` = (states, mask).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], cache_key: str | None = None,
                 cached: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__(tensors)
        self.cache_key = cache_key
        self.cached = cached


@register_encoder("hf", "t5")
class HFEncoderConditioner(FrozenEncoderMixin, TextConditioner):
    """Text conditioner on a Hugging Face encoder.

    Args:
        name: hub id (e.g. 't5-base') or local folder with the model and its tokenizer.
        output_dim: LM width (the projection's output).
        finetune: train the encoder too (its weights then go into checkpoints).
        device: where the encoder runs.
        autocast_dtype: encoder autocast dtype on accelerators ('float16', 'bfloat16', or None);
            off on CPU, as upstream.
        word_dropout: probability of dropping each word while training.
        normalize_text: upstream's spacy lemmatisation; not supported here.
        pooling: 'none' (token sequence [B, T, D] for cross-attention), or one vector per text
            ([B, 1, D]): 'mean', 'cls', 'last' (last real token), 'max', and for CLIP/CLAP
            'projected' (the joint-space embedding). None: the family's default ('none', or a
            sentence-transformers folder's own pooling).
        layer: which hidden state (0: embeddings, i: after layer i, -2: the one before last);
            None: the model's `last_hidden_state`.
        max_length: truncate longer token sequences to this length, with a warning. None: the
            smallest of the family's default (a sentence-transformers `max_seq_length`), the
            position limit of models with learned positions, and the tokenizer's own
            `model_max_length` (512 for T5). 0: no limit but the position limit (memory grows
            with the square of the text's length).
        prompt_template: format of non-empty texts, with one '{}' (e.g. 'query: {}').
        dtype: weights and compute dtype of the encoder ('float32', 'bfloat16', 'float16'; on
            CPU too). None: float32.
        normalize: L2-normalize the pooled vector. None: the family's default (True for
            sentence-transformers folders with a Normalize module and for CLAP 'projected').
        swapped_projection: what `swap` did to `output_proj` when it wrote this config ('kept' or
            'new'), shown by `inspect`; None for models trained with this encoder.
        cache: keep encoder outputs in a `TextEmbeddingCache` (True: a new in-memory one).
        cache_dir: also keep them on disk in this folder.
    """

    def __init__(self, name: str, output_dim: int, finetune: bool = False, device: str | torch.device = "cpu",
                 autocast_dtype: str | None = "float32", word_dropout: float = 0.0, normalize_text: bool = False,
                 pooling: str | None = None, layer: int | None = None, max_length: int | None = None,
                 prompt_template: str | None = None, dtype: str | None = None, normalize: bool | None = None,
                 swapped_projection: str | None = None, cache: bool | TextEmbeddingCache = False,
                 cache_dir: str | None = None):
        if normalize_text:
            raise ValueError("normalize_text=True needs upstream's spacy lemmatiser, which audiocraft_patched does "
                             "not ship; set normalize_text: false (the released MusicGen models use false)")
        if not 0.0 <= word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {word_dropout}")
        for option, value in (("dtype", dtype), ("autocast_dtype", autocast_dtype)):
            if value is not None and value not in DTYPES:
                raise ValueError(f"{option} must be one of {sorted(DTYPES)} or None, got {value!r}")
        if prompt_template is not None and prompt_template.count("{}") != 1:
            raise ValueError(f"prompt_template must contain '{{}}' once, where the text goes; got {prompt_template!r}")
        if max_length is not None and max_length < 0:
            raise ValueError(f"max_length must be a positive number of tokens (or 0: no limit), got {max_length}")
        family, tokenizer, encoder = load_text_encoder(str(name), pooling, dtype)
        pooling = family.default_pooling() if pooling is None else pooling
        normalize = family.default_normalize(pooling) if normalize is None else normalize
        if normalize and pooling == "none":
            raise ValueError("normalize=True applies to a pooled vector; choose a pooling other than 'none'")
        n_layers = family.num_layers(encoder)
        if layer is not None and n_layers is not None and not -(n_layers + 1) <= layer <= n_layers:
            raise ValueError(f"layer={layer} is out of range: {name!r} has {n_layers} layers, so hidden states "
                             f"{-(n_layers + 1)}..{n_layers} (0 = embeddings)")
        limit = family.position_limit(encoder)
        if max_length is not None and limit is not None and max_length > limit:
            raise ValueError(f"max_length={max_length} exceeds what {name!r} accepts ({limit} positions)")
        # What a checkpoint's config keeps: the option as given, or the default as it was before the
        # tokenizer's limit applied, so that configs (and patched upstream reading them) are unchanged.
        config_max_length = max_length
        if max_length is None:
            max_length = min((n for n in (family.default_max_length(), limit) if n is not None), default=None)
            config_max_length = max_length
            own = tokenizer_limit(tokenizer)
            if own is not None and (max_length is None or own < max_length):
                max_length = own
        elif max_length == 0:
            max_length = limit  # lifted: only what the model can take
        super().__init__(family.width(encoder, pooling), output_dim)
        self.name = str(name)
        self.family = family
        self.tokenizer = tokenizer
        self.word_dropout = word_dropout
        self.pooling = pooling
        self.layer = layer
        self.max_length = max_length  # in effect; `_config_max_length` is what options() writes
        self._config_max_length = config_max_length
        self.prompt_template = prompt_template
        self.normalize = normalize
        self.dtype = DTYPES[dtype or "float32"]
        self.autocast_dtype = None if autocast_dtype is None else DTYPES[autocast_dtype]
        self.swapped_projection = swapped_projection
        self.adapter = None  # (set by the base class here; stated for patch 0001's copy, whose base has none)
        self._model_inputs = family.input_names(encoder, tokenizer)
        self._attach_encoder(encoder, finetune, device)  # projection_origin 'new'; swap may set 'kept'
        self.cache: TextEmbeddingCache | None = None
        self._fingerprint: tuple[tuple, str] | None = None  # (weights_state, sha256)
        self._watched: tuple[torch.nn.Module, list[torch.Tensor]] | None = None
        if isinstance(cache, TextEmbeddingCache):  # (an empty cache is falsy: test the type)
            self.enable_cache(cache)
        elif cache or cache_dir:
            self.enable_cache(directory=cache_dir)

    # -- embedding cache ---------------------------------------------------------------------------
    def enable_cache(self, cache: TextEmbeddingCache | None = None, directory: str | None = None,
                     **kwargs) -> TextEmbeddingCache:
        """Cache encoder outputs (bit-identical results); `cache` may be shared between conditioners."""
        self.cache = cache if cache is not None else TextEmbeddingCache(directory=directory, **kwargs)
        return self.cache

    def disable_cache(self) -> None:
        self.cache = None

    def fingerprint(self) -> str:
        """Hash of the encoder (class, config, tokenizer, weights), recomputed when a weight changes."""
        if self._watched is None or self._watched[0] is not self.encoder:
            # Listing the tensors walks every submodule (most of a cache hit's time): done once.
            self._watched = (self.encoder, model_tensors(self.encoder))
        state = weights_state(self._watched[1])
        if self._fingerprint is None or self._fingerprint[0] != state:
            self._fingerprint = (state, encoder_fingerprint(self.encoder, self.tokenizer))
        return self._fingerprint[1]

    def refresh(self) -> None:
        """Forget the fingerprint: needed only after editing weights through `param.data` or replacing submodules."""
        self._fingerprint = None
        self._watched = None

    def _cache_settings(self) -> dict:
        autocast = self.autocast_dtype if self.device.type != "cpu" else None
        return {"family": self.family.name, "model": type(self.encoder).__name__, "pooling": self.pooling,
                "layer": self.layer, "max_length": self.max_length, "normalize": self.normalize,
                "dtype": str(self.dtype), "autocast": str(autocast), "device": self.device.type,
                "inputs": sorted(self._model_inputs)}

    def _cache_usable(self) -> bool:
        random_words = self.training and self.word_dropout > 0
        return self.cache is not None and not random_words and not (self.finetune and torch.is_grad_enabled())

    # -- conditioning ------------------------------------------------------------------------------
    def _prepare(self, text: str) -> str:
        if text == "":
            return ""  # stays empty: the null condition
        if self.prompt_template is not None:
            text = self.prompt_template.replace("{}", text)
        return self.family.prepare_text(text)

    def tokenize(self, x: list[str | None]) -> TextInputs:
        """Texts -> tokenizer outputs on the encoder's device; empty/None rows get a zero mask.

        With the embedding cache on, the batch's key comes along (`cache_key`), and on a hit the
        encoder output (`cached`) instead of token ids.
        """
        bad = [type(t).__name__ for t in x if t is not None and not isinstance(t, str)]
        if bad:
            raise TypeError(f"text conditions must be str or None, got {sorted(set(bad))}")
        for i, text in enumerate(x):  # a lone surrogate cannot be encoded; the tokenizer's error would not say so
            if text is not None and not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise ValueError(f"text condition {i} holds a lone surrogate {text[exc.start]!r} at position "
                                     f"{exc.start}: not valid Unicode; fix the string (e.g. "
                                     "text.encode('utf-8', 'replace').decode())") from None
        entries = ["" if t is None else t for t in x]
        if self.word_dropout > 0 and self.training:  # on the user's words, before any template
            entries = [" ".join(w for w in e.split(" ") if random.random() >= self.word_dropout) for e in entries]
        entries = [self._prepare(e) for e in entries]
        key = None
        if self._cache_usable():
            key = cache_key(self.fingerprint(), self._cache_settings(), entries)
            hit = self.cache.get(key, self.device)
            if hit is not None:
                return TextInputs({"attention_mask": hit[1]}, key, cached=hit)
        return TextInputs(self._tokenize(entries), key)

    def _tokenize(self, entries: list[str]) -> dict[str, torch.Tensor]:
        inputs = self.tokenizer(entries, return_tensors="pt", padding=True)
        if self.max_length is not None and inputs["input_ids"].shape[1] > self.max_length:
            longest = int(inputs["attention_mask"].sum(1).max())
            warnings.warn(f"{self.name}: a text has {longest} tokens; truncated to max_length={self.max_length} "
                          "(max_length=0 lifts the limit)")
            inputs = self.tokenizer(entries, return_tensors="pt", padding=True, truncation=True,
                                    max_length=self.max_length)
        inputs = {k: v for k, v in inputs.items() if k in self._model_inputs or k == "attention_mask"}
        if inputs["input_ids"].shape[1] == 0:
            # Only empty texts, and a tokenizer that adds no special token (GPT-2, Qwen): one masked pad
            # position, since a condition of length 0 has nothing for cross-attention to attend to.
            pad = {"input_ids": self.tokenizer.pad_token_id}
            inputs = {k: torch.full((len(entries), 1), pad.get(k, 0), dtype=v.dtype) for k, v in inputs.items()}
        empty = [i for i, e in enumerate(entries) if e == ""]
        inputs["attention_mask"][empty, :] = 0
        return {k: v.to(self.device) for k, v in inputs.items()}

    def encode(self, inputs: dict[str, torch.Tensor]) -> ConditionType:
        """Tokenized texts -> (hidden states [B, T, D] of the chosen layer ([B, 1, D] for 'projected'), mask [B, T])."""
        if not isinstance(inputs, TextInputs):  # tokenizer outputs made elsewhere
            inputs = TextInputs(inputs)
        mask = inputs["attention_mask"]
        if inputs.cached is not None:
            return inputs.cached
        autocast = nullcontext()
        if self.autocast_dtype not in (None, torch.float32) and self.device.type != "cpu":
            autocast = torch.autocast(self.device.type, dtype=self.autocast_dtype)
        model_inputs = {k: v for k, v in inputs.items() if k in self._model_inputs}
        # A frozen encoder builds no graph, even while the projection trains.
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()), autocast:
            states = self.family.encode(self.encoder, model_inputs, self.layer, self.pooling)
        if inputs.cache_key is not None and self.cache is not None:
            self.cache.put(inputs.cache_key, states, mask)  # computed once: kept for the next identical batch
        return states, mask

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, D] token states -> ([B, 1, D], [B, 1]) per `pooling` ('none' keeps them)."""
        if self.pooling == "none":
            return hidden, mask
        m = mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "projected":  # the model pooled and projected already: [B, 1, D]
            pooled = hidden[:, 0]
        elif self.pooling == "mean":
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        elif self.pooling == "max":
            pooled = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(1)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:  # last non-padded token (works for left or right padding)
            last = mask.shape[1] - 1 - mask.flip(1).float().argmax(1) if mask.shape[1] else mask.sum(1)
            pooled = hidden[torch.arange(hidden.shape[0]), last.long()]
        present = mask.amax(1, keepdim=True)  # [B, 1]: 0 for empty texts
        # Rows without tokens pool to 0 (max pooling would give finfo.min, which overflows in output_proj).
        pooled = pooled.masked_fill(present == 0, 0)
        if self.normalize:
            pooled = F.normalize(pooled, dim=-1)
        return pooled.unsqueeze(1), present

    # `project` and `forward` are spelled out rather than inherited: patch 0001 copies this class
    # onto upstream's `TextConditioner`, which has neither.
    def project(self, hidden: torch.Tensor, mask: torch.Tensor) -> ConditionType:
        """Encoder states [B, T, D] -> (condition [B, T', output_dim], mask [B, T']): pool, adapter, `output_proj`."""
        return project_features(*self.pool(hidden, mask), self.output_proj, self.adapter)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ConditionType:
        return self.project(*self.encode(inputs))

    # -- what it is --------------------------------------------------------------------------------
    def options(self) -> dict:
        """Constructor options that rebuild it (besides output_dim and device), as checkpoint configs hold them."""
        dtype_names = {value: name for name, value in DTYPES.items()}
        return {"name": self.name, "finetune": self.finetune, "word_dropout": self.word_dropout,
                "pooling": self.pooling, "layer": self.layer, "max_length": self._config_max_length,
                "prompt_template": self.prompt_template, "normalize": self.normalize,
                "dtype": dtype_names.get(self.dtype), "autocast_dtype": dtype_names.get(self.autocast_dtype),
                "swapped_projection": self.swapped_projection}

    def config(self) -> dict:
        """`model: t5` with upstream's keys when upstream's T5Conditioner can rebuild it, else `model: hf`."""
        options = self.options()
        plain = {"pooling": "none", "layer": None, "max_length": None, "prompt_template": None,
                 "normalize": False, "swapped_projection": None}
        if (type(self) in (HFEncoderConditioner, T5Conditioner) and self.name in UPSTREAM_T5_NAMES
                and options["dtype"] in (None, "float32") and all(options[k] == v for k, v in plain.items())):
            t5 = {"name": self.name, "finetune": self.finetune, "word_dropout": self.word_dropout,
                  "normalize_text": False, "autocast_dtype": options["autocast_dtype"]}
            return {"model": "t5", "t5": t5}
        return super().config()

    def set_dtype(self, dtype: torch.dtype) -> None:
        super().set_dtype(dtype)
        self.refresh()  # new weights: a new cache fingerprint

    def describe(self) -> dict:
        out = super().describe()
        n = sum(p.numel() for p in self.encoder.parameters())
        extras = [f"family {self.family.name}", str(self.dtype).replace("torch.", ""),
                  f"max_length {self.max_length}" if self.max_length else "",
                  f"template {self.prompt_template!r}" if self.prompt_template else ""]
        out["source"] = self.name
        out["summary"] = (f"{type(self).__name__}, encoder {self.name!r} ({type(self.encoder).__name__}, width "
                          f"{self.dim}, {n / 1e6:.2f}M params, {'fine-tuned' if self.finetune else 'frozen'}, pooling "
                          f"{self.pooling}, layer {'last' if self.layer is None else self.layer})"
                          + "".join(f", {e}" for e in extras if e))
        return out


class T5Conditioner(HFEncoderConditioner):
    """Upstream's name and constructor for the T5 conditioner; any T5 name or local folder works.

    `t5` and `t5_tokenizer` are kept as aliases of `encoder` and `tokenizer` for code written
    against upstream.
    """

    def __init__(self, name: str, output_dim: int, finetune: bool, device: str | torch.device,
                 autocast_dtype: str | None = "float32", word_dropout: float = 0.0, normalize_text: bool = False):
        super().__init__(name, output_dim, finetune=finetune, device=device, autocast_dtype=autocast_dtype,
                         word_dropout=word_dropout, normalize_text=normalize_text)

    @property
    def t5(self):
        return self.encoder

    @property
    def t5_tokenizer(self):
        return self.tokenizer
