"""Which generator a checkpoint is for, and loading it as that generator.

No upstream counterpart: upstream's user picks the class (`MusicGen`, `AudioGen`, `MAGNeT`) and
its `get_pretrained`. The CLI and tools that take any checkpoint ask here instead: the kind is
read from the LM's config (`xp_config.generator_kind`: MAGNeT by its LM, AudioGen by its solver).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..modules.conditioners.chroma import ChromaStemConditioner
from .audiogen import AudioGen
from .loaders import read_lm_config
from .magnet import MAGNeT
from .musicgen import _HF_MODEL_CHECKPOINTS_MAP, MusicGen

GENERATORS: dict[str, type[MusicGen]] = {"musicgen": MusicGen, "audiogen": AudioGen, "magnet": MAGNeT}
_BUILTIN = ("default", "default-zh", "debug")  # MusicGen's own names


def generator_kind(name: str | Path) -> str:
    """'musicgen', 'audiogen' or 'magnet' for a checkpoint folder, hub id in the local cache, or built-in name."""
    if str(name) in _BUILTIN or str(name) in _HF_MODEL_CHECKPOINTS_MAP:  # MusicGen's names ('small' is a MusicGen)
        return "musicgen"
    return read_lm_config(name)[1]


def load_generator(name: str | Path, device: str | torch.device | None = None,
                   dtype: torch.dtype | str | None = None) -> MusicGen:
    """The checkpoint `name` loaded as the generator its config says (MusicGen, AudioGen or MAGNeT)."""
    return GENERATORS[generator_kind(name)].get_pretrained(str(name), device=device, dtype=dtype)


def describe_generator(model: MusicGen) -> str:
    """One line: which generator `model` is and what sets it apart (for `inspect`)."""
    if isinstance(model, MAGNeT):
        lm = model.lm
        context = "all steps" if lm.subcodes_context < 0 else f"+-{lm.subcodes_context} steps"
        return (f"MAGNeT (masked non-autoregressive decoding: spans of {lm.span_len}, codebooks > 0 attend "
                f"{context}, decoding steps {model.generation_params['decoding_steps']})")
    if isinstance(model, AudioGen):
        return "AudioGen (autoregressive, text to sound)"
    melody = any(isinstance(c, ChromaStemConditioner) for c in model.lm.condition_provider.conditioners.values())
    return "MusicGen (autoregressive, text" + (" + melody" if melody else "") + " to music)"
