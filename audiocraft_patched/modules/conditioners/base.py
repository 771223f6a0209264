"""Conditioning: attributes, the conditioner base class, dropouts and the provider.

Mirrors the text-to-music part of `audiocraft/modules/conditioners.py` (audiocraft 1.3.0):
same class names, constructor arguments and outputs. Every conditioner turns a batch of
attributes into `(embeddings [B, L, output_dim], mask [B, L])`; embeddings are zero where the
mask is 0, and a missing attribute (`None`) gives an all-zero mask row: the null condition of
classifier-free guidance.

Beyond upstream: an `image` kind of attribute (`ConditioningAttributes.image`, read by
`ImageConditioner`s; `None` is its null), and reference audio through upstream's `wav` kind
(a `WavCondition` of length 0 is its null), so that image and audio conditioners
(`vision.py`, `audio_embed.py`) are batched, dropped and nulled like text.
"""
from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from copy import deepcopy
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from .adapters import build_adapter
from .projection import project_features

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
    # Not upstream: a path, PIL image or [C, H, W] tensor per attribute; None is the null image.
    image: dict[str, Any] = dataclasses.field(default_factory=dict)

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
    def image_attributes(self):
        return self.image.keys()

    @property
    def attributes(self) -> dict[str, Any]:
        return {"text": self.text_attributes, "wav": self.wav_attributes, "joint_embed": self.joint_embed_attributes,
                "image": self.image_attributes}

    def to_flat_dict(self) -> dict[str, Any]:
        return {f"{kind}.{name}": value for kind in ("text", "wav", "joint_embed", "image")
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
    if condition_type not in ("text", "wav", "image"):
        raise ValueError(f"cannot drop a condition of type {condition_type!r}; expected 'text', 'wav' or 'image'")
    if condition not in sample[condition_type]:
        if condition_type == "image":
            return sample  # an absent image already is the null image (images are optional per sample)
        raise ValueError(f"sample has no {condition_type} condition {condition!r}")
    if condition_type == "wav":
        if sample.wav[condition] is not None:  # None (an absent clip, as the provider reads it) is null already
            sample.wav[condition] = nullify_wav(sample.wav[condition])
    else:
        sample[condition_type][condition] = None
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
    """With probability p (training only), null every text, wav and image condition of the whole batch.

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
            for kind in ("wav", "text", "image"):
                for attribute in list(sample[kind]):
                    dropout_condition(sample, kind, attribute)
        return samples

    def __repr__(self) -> str:
        return f"ClassifierFreeGuidanceDropout(p={self.p})"


class BaseConditioner(nn.Module):
    """Base of all conditioners: features of width `dim`, projected to the LM's `output_dim`.

    The interface callers use (never a conditioner's attributes):

    - `tokenize(x)`: the CPU work, up to the host-to-device copy (as upstream);
    - `encode(inputs) -> (features [B, T, dim], mask [B, T])`: everything before the projection;
    - `project(features, mask) -> (condition [B, T', output_dim], mask [B, T'])`: the trainable
      map to the LM width (the adapter, if any, then `output_proj`), zero where the mask is 0;
    - `forward(inputs)` = `project(*encode(inputs))`;
    - `config()`: the `conditioners.<attribute>` entry that rebuilds it (`{'model': name, name: options()}`);
    - `set_dtype(dtype)`, `describe()` (what `inspect` shows).

    Args:
        dim: width of the features `encode` returns.
        output_dim: the LM width.
    """

    config_name: ClassVar[str] = ""  # the registry name its config is written under (set by `register_encoder`)
    projection_origin: str | None = None  # 'new' / 'kept' / 'checkpoint' for encoder conditioners
    swapped_projection: str | None = None  # what `swap` did to `output_proj`, recorded in the config

    def __init__(self, dim: int, output_dim: int):
        super().__init__()
        self.dim = dim
        self.output_dim = output_dim
        self.output_proj = nn.Linear(dim, output_dim)
        self.adapter: nn.Module | None = None
        self.adapter_config: dict | None = None

    def set_adapter(self, spec: dict | None) -> None:
        """Put an adapter (`adapters.py`: `{'kind': 'linear' | 'mlp' | 'resampler', **options}`) before `output_proj`.

        `output_proj` is made anew when the adapter changes the width it takes.
        """
        self.adapter_config = None if spec is None else dict(spec)
        if spec is None:
            self.adapter = None
            return
        self.adapter = build_adapter(self.dim, **spec)
        if self.adapter.out_dim != self.output_proj.in_features:
            self.output_proj = nn.Linear(self.adapter.out_dim, self.output_dim)

    def tokenize(self, *args, **kwargs) -> Any:
        raise NotImplementedError

    def encode(self, inputs: Any) -> ConditionType:
        """Tokenized inputs -> (features [B, T, dim], mask [B, T]), before the projection."""
        raise NotImplementedError

    def project(self, hidden: torch.Tensor, mask: torch.Tensor) -> ConditionType:
        """Features -> condition.

        Args:
            hidden: [B, T, dim] features (anything at padding).
            mask: [B, T] 1 where there is an input.
        Returns:
            (condition [B, T', output_dim] zero where the mask is 0, mask [B, T']).
        """
        return project_features(hidden, mask, self.output_proj, self.adapter)

    def forward(self, inputs: Any) -> ConditionType:
        return self.project(*self.encode(inputs))

    def options(self) -> dict[str, Any]:
        """Constructor options as a checkpoint config records them (besides `output_dim` and `device`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot describe itself in a config, so it cannot be saved")

    def config(self) -> dict[str, Any]:
        """This conditioner's `conditioners.<attribute>` entry, in upstream's shape: `{'model': name, name: {...}}`."""
        if not self.config_name:
            raise ValueError(f"{type(self).__name__} is not registered (`@register_encoder`), so no config builds it")
        return {"model": self.config_name, self.config_name: self.options()}

    def set_dtype(self, dtype: torch.dtype) -> None:
        """Run in `dtype` (the LM's, for inference)."""
        self.to(dtype)

    def describe(self) -> dict[str, str]:
        """What `inspect` shows: `source` (the encoder's name, or the class), `summary`, `projection`."""
        origin = {"kept": ", kept from the previous encoder (same width)",
                  "new": ", new (random: align or fine-tune it)",
                  "checkpoint": ", from the checkpoint"}.get(self.projection_origin or "", "")
        if origin.endswith("checkpoint") and self.swapped_projection:
            origin += (", made new by swap (random unless aligned since)" if self.swapped_projection == "new"
                       else ", kept by swap from the previous encoder")
        return {"source": type(self).__name__, "summary": f"{type(self).__name__}, width {self.dim}",
                "projection": f"Linear({self.output_proj.in_features} -> {self.output_proj.out_features}){origin}"}


class TextConditioner(BaseConditioner):
    """Marks conditioners that read `ConditioningAttributes.text`."""


class WaveformConditioner(BaseConditioner):
    """Marks conditioners that read `ConditioningAttributes.wav` (e.g. melody chroma, CLAP audio)."""


class ImageConditioner(BaseConditioner):
    """Marks conditioners that read `ConditioningAttributes.image` (not upstream)."""


class ConditioningProvider(nn.Module):
    """Runs every conditioner on its attribute of a batch of `ConditioningAttributes`.

    It keeps the seconds it spends in `timings` (summed until `reset_timings()`): 'tokenize' for
    all its tokenizing, and one entry per attribute for that conditioner's forward.

    Args:
        conditioners: {attribute name: conditioner}.
        device: where tokenized inputs go.
    """

    def __init__(self, conditioners: dict[str, BaseConditioner], device: torch.device | str = "cpu"):
        super().__init__()
        self.device = device
        self.conditioners = nn.ModuleDict(conditioners)
        self.timings: dict[str, float] = {}

    def reset_timings(self) -> None:
        self.timings = {}

    def _timed(self, key: str, start: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - start

    @property
    def text_conditions(self) -> list[str]:
        return [k for k, v in self.conditioners.items() if isinstance(v, TextConditioner)]

    @property
    def wav_conditions(self) -> list[str]:
        return [k for k, v in self.conditioners.items() if isinstance(v, WaveformConditioner)]

    @property
    def has_wav_condition(self) -> bool:
        return bool(self.wav_conditions)

    @property
    def image_conditions(self) -> list[str]:
        return [k for k, v in self.conditioners.items() if isinstance(v, ImageConditioner)]

    def tokenize(self, inputs: list[ConditioningAttributes]) -> dict[str, Any]:
        """Collate each attribute over the batch and tokenize it with its conditioner.

        A sample without some attribute of the model gets its null value (None text or image,
        empty wav), so present and absent inputs mix freely in one batch.
        """
        start = time.perf_counter()
        if not all(isinstance(x, ConditioningAttributes) for x in inputs):
            kinds = sorted({type(x).__name__ for x in inputs})
            raise TypeError(f"expected a list of ConditioningAttributes, got {kinds}")
        names_by_kind = {"text": self.text_conditions, "wav": self.wav_conditions, "image": self.image_conditions}
        batches: dict[str, list[Any]] = defaultdict(list)
        for sample in inputs:
            for kind, names in names_by_kind.items():
                unknown = set(sample[kind]) - set(names)
                if unknown:
                    known = {k: type(v).__name__ for k, v in self.conditioners.items()}
                    raise KeyError(f"unknown {kind} attributes {sorted(unknown)}; this model's conditioners are "
                                   f"{known}")
                for name in names:
                    batches[name].append(sample[kind].get(name))
        # Upstream's order, text then wav (the fuser concatenates cross-attention sources in it), then images.
        tokenized = {name: self.conditioners[name].tokenize(batches[name]) for name in self.text_conditions}
        for name in self.wav_conditions:
            tokenized[name] = self.conditioners[name].tokenize(collate_wavs(batches[name]))
        for name in self.image_conditions:
            tokenized[name] = self.conditioners[name].tokenize(batches[name])
        self._timed("tokenize", start)
        return tokenized

    def forward(self, tokenized: dict[str, Any]) -> dict[str, ConditionType]:
        out = {}
        for name, inputs in tokenized.items():
            start = time.perf_counter()
            out[name] = self.conditioners[name](inputs)
            self._timed(name, start)
        return out


def collate_wavs(conditions: list[WavCondition | None]) -> WavCondition:
    """One `WavCondition` per sample (wav [1, C, T], or None) -> a batch: mono wav [B, 1, T_max].

    As upstream's `_collate_wavs`: downmixed to mono, zero-padded to the longest, lengths and
    sample rates kept per row (rows may have different rates). A missing condition becomes a
    row of length 0, the null condition.
    """
    rows, lengths, rates, paths, seeks = [], [], [], [], []
    known_rate = next((int(c.sample_rate[0]) for c in conditions if c is not None and c.sample_rate), 0)
    for i, cond in enumerate(conditions):
        if cond is None:
            # A null row's rate is never read (a row of length 0 carries no audio).
            rows.append(torch.zeros(0))
            lengths.append(0)
            rates.append(known_rate)
            paths.append(None)
            seeks.append(None)
            continue
        if not isinstance(cond, WavCondition):
            raise TypeError(f"wav condition of sample {i} must be a WavCondition (or None), got {type(cond).__name__}")
        if cond.wav.dim() != 3 or cond.wav.shape[0] != 1:
            raise ValueError(f"wav condition of sample {i} must hold one waveform [1, C, T], got shape "
                             f"{tuple(cond.wav.shape)}; give each sample its own WavCondition")
        length = int(cond.length.reshape(-1)[0]) if cond.length.numel() else 0
        rows.append(cond.wav[0, :, :length].float().mean(0))  # [T]
        lengths.append(length)
        rates.append(int(cond.sample_rate[0]))
        paths.append(cond.path[0] if cond.path else None)
        seeks.append(cond.seek_time[0] if cond.seek_time else None)
    wav = torch.zeros(len(rows), 1, max(max(lengths, default=0), 1))  # [B, 1, T_max]
    for i, row in enumerate(rows):
        wav[i, 0, :row.shape[-1]] = row.cpu()
    return WavCondition(wav, torch.tensor(lengths, dtype=torch.long), rates, paths, seeks)
