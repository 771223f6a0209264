"""Write an aligned / fine-tuned MusicGen in upstream's export format, and small file helpers.

Mirrors the layout that `audiocraft/utils/export.py` (audiocraft 1.3.0) writes and
`models/loaders.py` reads: `state_dict.bin` = `{'best_state': lm state dict, 'xp.cfg': YAML,
'version', 'exported'}` and `compression_state_dict.bin` (copied from the source model). The
config names the new conditioner (`model: hf_adapter` with its adapter, or the source's own
conditioner), so `MusicGen.get_pretrained(folder)` rebuilds it in a fresh process.
"""
from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..models.loaders import COMPRESSION_FILE, LM_FILE, resolve_file
from .lora import merged_state_dict


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save` to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def adapter_conditioner_config(name: str, adapter: dict, finetune: bool = False, pooling: str = "none",
                               layer: int | None = None) -> dict:
    """The `conditioners.<attr>` config of an `hf_adapter` conditioner."""
    return {"model": "hf_adapter", "hf_adapter": {"name": str(name), "adapter": dict(adapter), "finetune": finetune,
                                                  "pooling": pooling, "layer": layer}}


def export_musicgen(lm, cfg: dict, attribute: str, conditioner_cfg: dict, source: str | Path,
                    out: str | Path) -> Path:
    """Write `lm` (LoRA merged) with `conditioner_cfg` for `attribute` as a MusicGen checkpoint folder.

    Args:
        lm: the trained `LMModel` (its conditioner for `attribute` is the new one).
        cfg: the source model's config (`lm.cfg` as loaded); not modified.
        attribute: the text attribute whose conditioner changed (e.g. 'description').
        conditioner_cfg: `{'model': ..., <model>: {...}}` for that attribute.
        source: the source MusicGen (folder or hub id) whose codec file is copied.
        out: output folder.
    Returns:
        the folder.
    """
    from omegaconf import OmegaConf

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    cfg["conditioners"][attribute] = copy.deepcopy(conditioner_cfg)
    state = {k: v.detach().cpu().clone() for k, v in merged_state_dict(lm).items()}
    atomic_save({"best_state": state, "xp.cfg": OmegaConf.to_yaml(OmegaConf.create(cfg)),
                 "version": "audiocraft_patched.align", "exported": True}, out / LM_FILE)
    codec = resolve_file(source, COMPRESSION_FILE)
    target = out / COMPRESSION_FILE
    if codec.resolve() != target.resolve():
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        shutil.copyfile(codec, tmp)
        os.replace(tmp, target)
    return out
