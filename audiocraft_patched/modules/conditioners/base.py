"""Conditioning: attributes, the conditioner base class, dropouts, the provider and the fuser.

Mirrors the text-to-music part of `audiocraft/modules/conditioners.py` (audiocraft 1.3.0):
same class names, constructor arguments and outputs. Every conditioner turns a batch of
attributes into `(embeddings [B, L, output_dim], mask [B, L])`; embeddings are zero where the
mask is 0, and a missing attribute (`None`) gives an all-zero mask row: the null condition of
classifier-free guidance.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from copy import deepcopy
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..transformer import create_sin_embedding

ConditionType = tuple[torch.Tensor, torch.Tensor]  # (condition [B, L, D], mask [B, L])


class WavCondition(NamedTuple):
    wav: torch.Tensor  # [B, C, T]
    length: torch.Tensor  # [B]
    sample_rate: list[int]
    path: list[str | None] = []
    seek_time: list[float | None] = []


class JointEmbedCondition(NamedTuple):
    wav: torch.Tensor
    text: list[str | None]
    length: torch.Tensor
    sample_rate: list[int]
    path: list[str | None] = []
    seek_time: list[float | None] = []


@dataclasses.dataclass
class ConditioningAttributes:
    """The conditions of one sample, by kind: `text={'description': '...'}`, `wav={...}`."""

    text: dict[str, str | None] = dataclasses.field(default_factory=dict)
    wav: dict[str, WavCondition] = dataclasses.field(default_factory=dict)
    joint_embed: dict[str, JointEmbedCondition] = dataclasses.field(default_factory=dict)

    def __getitem__(self, item: str):
        return getattr(self, item)

    @property
    def text_attributes(self):
        return self.text.keys()

    @property
    def wav_attributes(self):
        return self.wav.keys()

    @property
    def joint_embed_attributes(self):
        return self.joint_embed.keys()

    @property
    def attributes(self) -> dict[str, Any]:
        return {"text": self.text_attributes, "wav": self.wav_attributes, "joint_embed": self.joint_embed_attributes}

    def to_flat_dict(self) -> dict[str, Any]:
        return {f"{kind}.{name}": value for kind in ("text", "wav", "joint_embed")
                for name, value in self[kind].items()}

    @classmethod
    def from_flat_dict(cls, x: dict[str, Any]) -> "ConditioningAttributes":
        out = cls()
        for key, value in x.items():
            kind, name = key.split(".")
            out[kind][name] = value
        return out


def nullify_condition(condition: ConditionType, dim: int = 1) -> ConditionType:
    """A zero condition of length 1 along `dim`, with an all-zero mask [B, 1]."""
    if dim == 0:
        raise ValueError("cannot nullify along the batch dimension")
    cond, _ = condition
    index = torch.zeros(1, dtype=torch.long, device=cond.device)
    out = 0.0 * cond.index_select(dim, index)
    return out, torch.zeros((cond.shape[0], 1), device=cond.device).int()


def nullify_wav(cond: WavCondition) -> WavCondition:
    null_wav, _ = nullify_condition((cond.wav, torch.zeros_like(cond.wav)), dim=cond.wav.dim() - 1)
    batch = cond.wav.shape[0]
    return WavCondition(null_wav, torch.zeros(batch, dtype=torch.long, device=cond.wav.device),
                        cond.sample_rate, [None] * batch, [None] * batch)


def dropout_condition(sample: ConditioningAttributes, condition_type: str, condition: str) -> ConditioningAttributes:
    """Replace one attribute of `sample` (in place) by its null value."""
    if condition_type not in ("text", "wav"):
        raise ValueError(f"cannot drop a condition of type {condition_type!r}; expected 'text' or 'wav'")
    if condition not in sample[condition_type]:
        raise ValueError(f"sample has no {condition_type} condition {condition!r}")
    if condition_type == "wav":
        sample.wav[condition] = nullify_wav(sample.wav[condition])
    else:
        sample.text[condition] = None
    return sample


class DropoutModule(nn.Module):
    """A module with its own seeded generator, so that dropout draws leave the global RNG alone."""

    def __init__(self, seed: int = 1234):
        super().__init__()
        self.rng = torch.Generator()
        self.rng.manual_seed(seed)


class AttributeDropout(DropoutModule):
    """Drop whole attributes across the batch with per-attribute probabilities (training only).

    Args:
        p: {condition_type: {attribute: probability}}.
        active_on_eval: also drop in eval mode.
    """

    def __init__(self, p: dict[str, dict[str, float]], active_on_eval: bool = False, seed: int = 1234):
        super().__init__(seed=seed)
        self.active_on_eval = active_on_eval
        self.p = {kind: dict(probs) for kind, probs in p.items()}

    def forward(self, samples: list[ConditioningAttributes]) -> list[ConditioningAttributes]:
        if not self.training and not self.active_on_eval:
            return samples
        samples = deepcopy(samples)
        for kind, probs in self.p.items():
            for attribute, p in probs.items():
                if torch.rand(1, generator=self.rng).item() < p:
                    for sample in samples:
                        dropout_condition(sample, kind, attribute)
        return samples

    def __repr__(self) -> str:
        return f"AttributeDropout({self.p})"


class ClassifierFreeGuidanceDropout(DropoutModule):
    """With probability p (training only), null every text and wav condition of the whole batch.

    `ClassifierFreeGuidanceDropout(p=1.0)` (a fresh module is in training mode) makes the null
    conditions of CFG at generation time.
    """

    def __init__(self, p: float, seed: int = 1234):
        super().__init__(seed=seed)
        self.p = p

    def forward(self, samples: list[ConditioningAttributes]) -> list[ConditioningAttributes]:
        if not self.training:
            return samples
        if not torch.rand(1, generator=self.rng).item() < self.p:
            return samples
        samples = deepcopy(samples)
        for sample in samples:
            for kind in ("wav", "text"):
                for attribute in list(sample[kind]):
                    dropout_condition(sample, kind, attribute)
        return samples

    def __repr__(self) -> str:
        return f"ClassifierFreeGuidanceDropout(p={self.p})"


class BaseConditioner(nn.Module):
    """Base of all conditioners: something of width `dim`, projected to the LM's `output_dim`.

    Subclasses implement `tokenize` (CPU work, up to the host-to-device copy) and `forward`
    (the compute), returning `(embeddings [B, L, output_dim], mask [B, L])`.
    """

    def __init__(self, dim: int, output_dim: int):
        super().__init__()
        self.dim = dim
        self.output_dim = output_dim
        self.output_proj = nn.Linear(dim, output_dim)

    def tokenize(self, *args, **kwargs) -> Any:
        raise NotImplementedError

    def forward(self, inputs: Any) -> ConditionType:
        raise NotImplementedError


class TextConditioner(BaseConditioner):
    """Marks conditioners that read `ConditioningAttributes.text`."""


class WaveformConditioner(BaseConditioner):
    """Marks conditioners that read `ConditioningAttributes.wav` (e.g. melody chroma)."""


class ConditioningProvider(nn.Module):
    """Runs every conditioner on its attribute of a batch of `ConditioningAttributes`.

    Args:
        conditioners: {attribute name: conditioner}.
        device: where tokenized inputs go.
    """

    def __init__(self, conditioners: dict[str, BaseConditioner], device: torch.device | str = "cpu"):
        super().__init__()
        self.device = device
        self.conditioners = nn.ModuleDict(conditioners)

    @property
    def text_conditions(self) -> list[str]:
        return [k for k, v in self.conditioners.items() if isinstance(v, TextConditioner)]

    @property
    def wav_conditions(self) -> list[str]:
        return [k for k, v in self.conditioners.items() if isinstance(v, WaveformConditioner)]

    @property
    def has_wav_condition(self) -> bool:
        return bool(self.wav_conditions)

    def tokenize(self, inputs: list[ConditioningAttributes]) -> dict[str, Any]:
        """Collate each attribute over the batch and tokenize it with its conditioner."""
        if not all(isinstance(x, ConditioningAttributes) for x in inputs):
            kinds = sorted({type(x).__name__ for x in inputs})
            raise TypeError(f"expected a list of ConditioningAttributes, got {kinds}")
        texts: dict[str, list[str | None]] = defaultdict(list)
        for sample in inputs:
            unknown = set(sample.text) - set(self.conditioners)
            if unknown:
                raise KeyError(f"unknown text attributes {sorted(unknown)}; this model has {sorted(self.conditioners)}")
            for name in self.text_conditions:
                texts[name].append(sample.text.get(name))
        if self.wav_conditions:
            raise NotImplementedError(
                f"waveform conditioning ({self.wav_conditions}, e.g. musicgen-melody's chroma) is not "
                "supported by audiocraft_patched yet; use a text-only MusicGen checkpoint")
        return {name: self.conditioners[name].tokenize(batch) for name, batch in texts.items()}

    def forward(self, tokenized: dict[str, Any]) -> dict[str, ConditionType]:
        return {name: self.conditioners[name](inputs) for name, inputs in tokenized.items()}


class ConditionFuser(nn.Module):
    """Combines conditions with the LM input: 'sum', 'prepend', 'cross' or 'input_interpolate'.

    Args:
        fuse2cond: {method: [attribute names]}.
        cross_attention_pos_emb: add a sinusoidal embedding to the cross-attention source.
        cross_attention_pos_emb_scale: its scale.
    """

    FUSING_METHODS = ["sum", "prepend", "cross", "input_interpolate"]

    def __init__(self, fuse2cond: dict[str, list[str]], cross_attention_pos_emb: bool = False,
                 cross_attention_pos_emb_scale: float = 1.0):
        super().__init__()
        unknown = set(fuse2cond) - set(self.FUSING_METHODS)
        if unknown:
            raise ValueError(f"unknown fuse methods {sorted(unknown)}; use {self.FUSING_METHODS}")
        self.fuse2cond = {method: list(fuse2cond.get(method, [])) for method in self.FUSING_METHODS}
        self.cond2fuse = {cond: method for method, conds in self.fuse2cond.items() for cond in conds}
        self.cross_attention_pos_emb = cross_attention_pos_emb
        self.cross_attention_pos_emb_scale = cross_attention_pos_emb_scale

    def forward(self, input: torch.Tensor, conditions: dict[str, ConditionType], first_step: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fuse.

        Args:
            input: [B, T, D] LM input embeddings.
            conditions: {attribute: (cond [B, L, D], mask [B, L])}.
            first_step: False on later generation steps, where 'prepend' was already done.
        Returns:
            (input [B, T', D], cross-attention source [B, L_total, D] or None).
        """
        unknown = set(conditions) - set(self.cond2fuse)
        if unknown:
            raise KeyError(f"no fuse method for conditions {sorted(unknown)}")
        cross = []
        for name, (cond, _) in conditions.items():
            method = self.cond2fuse[name]
            if method == "sum":
                input = input + cond
            elif method == "input_interpolate":
                cond = F.interpolate(cond.transpose(1, 2), size=input.shape[1]).transpose(1, 2)
                input = input + cond
            elif method == "prepend":
                if first_step:
                    input = torch.cat([cond, input], dim=1)
            else:
                cross.append(cond)
        source = torch.cat(cross, dim=1) if cross else None
        if self.cross_attention_pos_emb and source is not None:
            positions = torch.arange(source.shape[1], device=source.device).view(1, -1, 1)
            source = source + self.cross_attention_pos_emb_scale * create_sin_embedding(positions, source.shape[-1])
        return input, source
