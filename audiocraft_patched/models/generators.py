"""Which generator a checkpoint is for, and loading it as that generator.

No upstream counterpart: upstream's user picks the class (`MusicGen`, `AudioGen`, `MAGNeT`) and
its `get_pretrained`. The CLI and tools that take any checkpoint ask here instead: the kind is
read from the LM's config (`xp_config.generator_kind`: MAGNeT by its LM, AudioGen by its solver).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .audiogen import AudioGen
from .loaders import read_lm_config
from .magnet import MAGNeT
from .musicgen import MusicGen

GENERATORS: dict[str, type[MusicGen]] = {"musicgen": MusicGen, "audiogen": AudioGen, "magnet": MAGNeT}
_BUILTIN = ("default", "default-zh", "debug")  # MusicGen's own names


def generator_kind(name: str | Path) -> str:
    """'musicgen', 'audiogen' or 'magnet' for a checkpoint folder, hub id in the local cache, or built-in name."""
    if str(name) in _BUILTIN:
        return "musicgen"
    return read_lm_config(name)[1]


def load_generator(name: str | Path, device: str | torch.device | None = None,
                   dtype: torch.dtype | str | None = None) -> MusicGen:
    """The checkpoint `name` loaded as the generator its config says (MusicGen, AudioGen or MAGNeT)."""
    return GENERATORS[generator_kind(name)].get_pretrained(str(name), device=device, dtype=dtype)
