"""Conditioners and the registry that builds them from upstream-shaped configs.

Upstream configs name a conditioner type, then give its kwargs under that name:
`description: {model: t5, t5: {name: t5-base, ...}}`. `ENCODERS` is keyed by that string; `"t5"`
is an alias of `"hf"`, so upstream configs load unchanged. To add an encoder family, write one
small file that decorates its class with `@register_encoder("name")` (`registry.py`) and import it below.
"""
from __future__ import annotations

from .base import (  # noqa: F401
    AttributeDropout,
    BaseConditioner,
    ClassifierFreeGuidanceDropout,
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

from .fuser import ConditionFuser  # noqa: F401
from .registry import ENCODERS, build_conditioner, register_encoder  # noqa: F401

from . import audio_embed, chroma, hf_adapter, hf_encoder, lut, vision  # noqa: E402,F401  (importing registers)
from .chroma import ChromaStemConditioner  # noqa: E402,F401
from .hf_encoder import HFEncoderConditioner, T5Conditioner  # noqa: E402,F401
from .hf_adapter import HFAdapterConditioner  # noqa: E402,F401
from .lut import LUTConditioner  # noqa: E402,F401
