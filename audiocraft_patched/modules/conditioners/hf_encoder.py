"""`HFEncoderConditioner`: any Hugging Face text encoder as MusicGen's text conditioner.

Replaces upstream's `T5Conditioner` (`audiocraft/modules/conditioners.py`, 1.3.0), which accepts
ten whitelisted T5 names, downloads them at run time and keeps a hand-written table of widths.
Here `name` is a hub id (resolved from the local Hugging Face cache when offline) or a local
folder, and the width comes from the model's config. With the defaults (last hidden state, no
pooling, no truncation) the outputs equal upstream's T5Conditioner on the same weights.

Upstream's contract is kept:
- `tokenize()` does the CPU work up to the host-to-device copy, `forward()` the compute;
- embeddings are zero at padding; an empty or `None` text gives an all-zero mask row (the CFG null);
- a frozen encoder is not a submodule, so its weights stay out of `state_dict()` (only
  `output_proj` is saved); with `finetune=True` it is, and they go in.
"""
from __future__ import annotations

import logging
import os
import random
import warnings
from contextlib import nullcontext

import torch

from . import TextConditioner, register_encoder
from .base import ConditionType

logger = logging.getLogger(__name__)

POOLINGS = ("none", "mean", "cls", "last", "max")


def resolve_pretrained(name: str, loader, **kwargs):
    """`loader.from_pretrained(name)` with an error that says how to get the files offline."""
    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        if os.path.isdir(name):
            raise OSError(f"could not load {loader.__name__} from folder {name!r}: {exc}") from exc
        raise OSError(
            f"could not find the Hugging Face model {name!r} ({exc.__class__.__name__}: {exc}).\n"
            "Without network access, either pass a local folder (one written by `save_pretrained` for the "
            "model and its tokenizer), or fill the Hugging Face cache beforehand on a machine online, e.g. "
            f"`huggingface-cli download {name}`, and set HF_HUB_OFFLINE=1.") from exc


def load_text_encoder(name: str):
    """Load (tokenizer, encoder module, hidden width) for a hub id or local folder."""
    from transformers import AutoConfig, AutoModel, AutoModelForTextEncoding, AutoTokenizer

    from transformers.models.auto.modeling_auto import MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES

    config = resolve_pretrained(name, AutoConfig)
    tokenizer = resolve_pretrained(name, AutoTokenizer)
    if config.model_type in MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES:
        # For seq2seq families this is the encoder alone: AutoModel would build the whole model
        # (and a random decoder when the folder holds only an encoder).
        model = resolve_pretrained(name, AutoModelForTextEncoding)
    else:
        model = resolve_pretrained(name, AutoModel)
    width = next((getattr(config, key) for key in ("d_model", "hidden_size", "n_embd", "dim")
                  if isinstance(getattr(config, key, None), int)), None)
    if width is None:
        raise ValueError(f"cannot read the hidden width of {name!r} from its config "
                         "(no d_model / hidden_size / n_embd)")
    return tokenizer, model, width


@register_encoder("hf", "t5")
class HFEncoderConditioner(TextConditioner):
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
        pooling: 'none' (token sequence for cross-attention) or 'mean'/'cls'/'last'/'max'
            (one vector per text).
        layer: which hidden state to use (None: the last hidden state; -2: the one before...).
        max_length: truncate longer token sequences to this length (with a warning).
    """

    def __init__(self, name: str, output_dim: int, finetune: bool = False, device: str | torch.device = "cpu",
                 autocast_dtype: str | None = "float32", word_dropout: float = 0.0, normalize_text: bool = False,
                 pooling: str = "none", layer: int | None = None, max_length: int | None = None):
        if normalize_text:
            raise ValueError("normalize_text=True needs upstream's spacy lemmatiser, which audiocraft_patched does "
                             "not ship; set normalize_text: false (the released MusicGen models use false)")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if not 0.0 <= word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {word_dropout}")
        tokenizer, encoder, width = load_text_encoder(str(name))
        super().__init__(width, output_dim)
        self.name = str(name)
        self.finetune = finetune
        self.word_dropout = word_dropout
        self.pooling = pooling
        self.layer = layer
        self.max_length = max_length
        self.tokenizer = tokenizer
        self.autocast_dtype = None if autocast_dtype is None else getattr(torch, autocast_dtype)
        self._forward_args = set(_forward_parameters(encoder))
        encoder = encoder.to(device).train(finetune)
        encoder.requires_grad_(finetune)
        if finetune:
            self.encoder = encoder
        else:
            # Not a registered submodule: the frozen weights stay out of state_dict (as upstream's
            # `self.__dict__['t5']`); `_apply` below still moves/casts them with the module.
            self.__dict__["encoder"] = encoder

    def _apply(self, fn, *args, **kwargs):
        if not self.finetune:
            self.__dict__["encoder"] = self.__dict__["encoder"]._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.finetune:
            self.__dict__["encoder"].eval()  # a frozen encoder never runs dropout
        return self

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def tokenize(self, x: list[str | None]) -> dict[str, torch.Tensor]:
        """Texts -> tokenizer outputs on the encoder's device; empty/None rows get a zero mask."""
        bad = [type(t).__name__ for t in x if t is not None and not isinstance(t, str)]
        if bad:
            raise TypeError(f"text conditions must be str or None, got {sorted(set(bad))}")
        entries = ["" if t is None else t for t in x]
        if self.word_dropout > 0 and self.training:
            entries = [" ".join(w for w in e.split(" ") if random.random() >= self.word_dropout) for e in entries]
        inputs = self.tokenizer(entries, return_tensors="pt", padding=True)
        if self.max_length is not None and inputs["input_ids"].shape[1] > self.max_length:
            longest = int(inputs["attention_mask"].sum(1).max())
            warnings.warn(f"{self.name}: a text has {longest} tokens; truncated to max_length={self.max_length}")
            inputs = self.tokenizer(entries, return_tensors="pt", padding=True, truncation=True,
                                    max_length=self.max_length)
        inputs = {k: v for k, v in inputs.items() if k in self._forward_args}
        empty = [i for i, e in enumerate(entries) if e == ""]
        inputs["attention_mask"][empty, :] = 0
        return {k: v.to(self.device) for k, v in inputs.items()}

    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Hidden states [B, T, dim] of the chosen layer."""
        if self.layer is None:
            return self.encoder(**inputs).last_hidden_state
        return self.encoder(**inputs, output_hidden_states=True).hidden_states[self.layer]

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, D] token states -> ([B, 1, D], [B, 1]) per `pooling` ('none' keeps them)."""
        if self.pooling == "none":
            return hidden, mask
        m = mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "mean":
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        elif self.pooling == "max":
            pooled = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(1)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:  # last non-padded token (works for left or right padding)
            last = mask.shape[1] - 1 - mask.flip(1).float().argmax(1) if mask.shape[1] else mask.sum(1)
            pooled = hidden[torch.arange(hidden.shape[0]), last.long()]
        return pooled.unsqueeze(1), mask.amax(1, keepdim=True)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ConditionType:
        mask = inputs["attention_mask"]
        autocast = nullcontext()
        if self.autocast_dtype not in (None, torch.float32) and self.device.type != "cpu":
            autocast = torch.autocast(self.device.type, dtype=self.autocast_dtype)
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()), autocast:
            hidden = self.encode(inputs)
        hidden, mask = self.pool(hidden, mask)
        embeds = self.output_proj(hidden.to(self.output_proj.weight))
        return embeds * mask.unsqueeze(-1), mask


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


def _forward_parameters(model) -> list[str]:
    """Argument names the encoder's forward accepts (BERT tokenizers add token_type_ids, etc.)."""
    import inspect

    return list(inspect.signature(model.forward).parameters)
