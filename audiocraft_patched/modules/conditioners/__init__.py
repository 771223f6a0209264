"""Conditioners and the registry that builds them from upstream-shaped configs.

Upstream configs name a conditioner type, then give its kwargs under that name:
`description: {model: t5, t5: {name: t5-base, ...}}`. `ENCODERS` is keyed by that string; `"t5"`
is an alias of `"hf"`, so upstream configs load unchanged. To add an encoder family, write one
small file that decorates its class with `@register_encoder("name")` and import it below.
"""
from __future__ import annotations

from .base import (  # noqa: F401
    AttributeDropout,
    BaseConditioner,
    ClassifierFreeGuidanceDropout,
    ConditionFuser,
    ConditioningAttributes,
    ConditioningProvider,
    ConditionType,
    DropoutModule,
    JointEmbedCondition,
    TextConditioner,
    WavCondition,
    WaveformConditioner,
    dropout_condition,
    nullify_condition,
    nullify_wav,
)

ENCODERS: dict[str, type[BaseConditioner]] = {}


def register_encoder(*names: str):
    """Class decorator: make the class buildable as `model: <name>` in a conditioner config."""
    def wrap(cls):
        for name in names:
            if name in ENCODERS:
                raise KeyError(f"encoder {name!r} already registered (by {ENCODERS[name].__name__})")
            ENCODERS[name] = cls
        return cls
    return wrap


def build_conditioner(model: str, output_dim: int, **kwargs) -> BaseConditioner:
    """Build the conditioner registered as `model` with its config kwargs."""
    if model not in ENCODERS:
        raise KeyError(f"unknown conditioner {model!r}; known: {sorted(ENCODERS)}")
    return ENCODERS[model](output_dim=output_dim, **kwargs)


from . import audio_embed, hf_encoder, lut, vision  # noqa: E402,F401  (importing registers)
from .hf_encoder import HFEncoderConditioner, T5Conditioner  # noqa: E402,F401
from .lut import LUTConditioner  # noqa: E402,F401
from ...align import conditioner as _hf_adapter  # noqa: E402,F401  (registers hf_adapter)
