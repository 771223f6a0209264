"""Write an aligned / fine-tuned MusicGen as a model folder in upstream's export format.

Mirrors what `audiocraft/utils/export.py` (audiocraft 1.3.0) writes and `models/loaders.py`
reads: `state_dict.bin` (LoRA merged into the weights) and `compression_state_dict.bin` (copied
from the source model). The writing itself is `utils.export`'s: atomic, and the config's
conditioner entries come from the conditioners' own `config()` (`model: hf_adapter` with its
adapter, or the source's own conditioner), so `MusicGen.get_pretrained(folder)` rebuilds them in
a fresh process.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models.loaders import COMPRESSION_FILE, resolve_file
from ..utils.export import copy_file, export_lm
from .lora import merged_state_dict


def export_musicgen(lm, cfg: Any, source: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write `lm` (LoRA merged) and the source's codec as a MusicGen checkpoint folder.

    Args:
        lm: the trained `LMModel`, its conditioners as they should be saved.
        cfg: the source model's config (`lm.cfg` as loaded); not modified.
        source: the source MusicGen (folder or hub id) whose codec file is copied.
        out: output folder.
        overwrite: replace files already in `out`.
    Returns:
        the folder.
    """
    out = Path(out)
    export_lm(out, lm, cfg, state=merged_state_dict(lm), version="audiocraft_patched.align", overwrite=overwrite)
    copy_file(resolve_file(source, COMPRESSION_FILE), out / COMPRESSION_FILE, overwrite=overwrite)
    return out
