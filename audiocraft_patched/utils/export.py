"""The one writer of files and checkpoints: atomic, and never over a file unless told to.

Mirrors `audiocraft/utils/export.py` (audiocraft 1.3.0), which writes the release files
`state_dict.bin` / `compression_state_dict.bin` as `{'best_state', 'xp.cfg', 'version',
'exported'}`, the format `models/loaders.py` reads. Every folder this package writes (swap, align,
finetune, the world trainers, tiny test models) goes through here:

- `atomic_write` (and `save_torch`, `write_text`, `copy_file`): the bytes go to a temporary file
  in the target's folder, are fsync'ed, then renamed over the target, so a reader (or a crash)
  never sees half a file; an existing target is an error unless `overwrite=True`;
- `save_checkpoint` / `export_lm`: the `xp.cfg` of an LM checkpoint takes each conditioner's
  entry from the conditioner's own `config()` and the fuser lists from `ConditionFuser.config()`,
  so a checkpoint cannot disagree with the model it was written from.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from ..data.atomic import atomic_write  # noqa: F401  (the primitive; re-exported)

VERSION = "audiocraft_patched"


def save_torch(obj: Any, path: str | Path, overwrite: bool = False) -> Path:
    """`torch.save(obj)` to `path`, atomically."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp), overwrite)


def write_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """Write `text` (UTF-8) to `path`, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite)


def copy_file(source: str | Path, path: str | Path, overwrite: bool = False) -> Path:
    """Copy `source` to `path`, atomically; nothing is done when both are the same file."""
    source, path = Path(source), Path(path)
    if path.exists() and source.resolve() == path.resolve():
        return path
    return atomic_write(path, lambda tmp: shutil.copyfile(source, tmp), overwrite)


def copy_folder(source: str | Path, path: str | Path, overwrite: bool = False) -> Path:
    """Copy every file under `source` to the same place under `path`, each atomically (see `copy_file`)."""
    source, path = Path(source), Path(path)
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        copy_file(file, path / file.relative_to(source), overwrite)
    return path


def _own_storage(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`, copied when it is a view: `torch.save` would write the whole storage behind a view."""
    whole = tensor.is_contiguous() and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    return tensor if whole else tensor.clone()


def checkpoint_config(cfg: Any, conditioners: Mapping[str, Any] | None = None, fuser: Any = None) -> str:
    """The YAML of `cfg`, the entries of `conditioners` ({attribute: conditioner}) and `fuser` from their `config()`.

    Args:
        cfg: the training config (a dict, an OmegaConf config or its YAML text); other keys and
            their `${...}` interpolations are kept as they are.
        conditioners: conditioners whose `conditioners.<attribute>` entry is (re)written.
        fuser: a `ConditionFuser` whose method lists replace the config's.
    """
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(cfg if isinstance(cfg, str) else OmegaConf.to_container(OmegaConf.create(cfg)))
    OmegaConf.set_struct(cfg, False)
    if conditioners:
        if cfg.get("conditioners") is None:
            cfg.conditioners = {}
        for attribute, conditioner in conditioners.items():
            cfg.conditioners[attribute] = conditioner.config()
    if fuser is not None:
        if cfg.get("fuser") is None:
            cfg.fuser = {}
        for key, value in fuser.config().items():
            cfg.fuser[key] = value
    return OmegaConf.to_yaml(cfg)


def save_checkpoint(path: str | Path, state: Mapping[str, torch.Tensor], cfg: Any,
                    conditioners: Mapping[str, Any] | None = None, fuser: Any = None, version: str = VERSION,
                    overwrite: bool = False) -> Path:
    """Write one release file, `{'best_state': state, 'xp.cfg': YAML, 'version', 'exported': True}`, atomically.

    Args:
        path: the file (`state_dict.bin` or `compression_state_dict.bin` in a model folder).
        state: the state dict (saved detached, on the CPU).
        cfg: the config (see `checkpoint_config`).
        conditioners, fuser: modules whose `config()` is written into the config.
        version: recorded as the writer's version.
        overwrite: replace an existing file.
    """
    package = {"best_state": {k: _own_storage(v.detach().cpu()) for k, v in state.items()},
               "xp.cfg": checkpoint_config(cfg, conditioners, fuser), "version": version, "exported": True}
    return save_torch(package, path, overwrite)


def export_lm(folder: str | Path, lm: torch.nn.Module, cfg: Any, state: Mapping[str, torch.Tensor] | None = None,
              version: str = VERSION, overwrite: bool = False) -> Path:
    """Write `lm` as `folder/state_dict.bin`, its config rebuilt from its conditioners and fuser.

    Args:
        folder: the model folder.
        lm: an `LMModel`.
        cfg: the config it was built from (`lm.cfg` for a loaded model); its conditioner and fuser
            entries are replaced by what the modules say.
        state: the weights to save (default `lm.state_dict()`; e.g. LoRA merged).
        version, overwrite: as in `save_checkpoint`.
    """
    from ..models.loaders import LM_FILE  # the file name loaders read (upstream's)

    state = lm.state_dict() if state is None else state
    return save_checkpoint(Path(folder) / LM_FILE, state, cfg, dict(lm.condition_provider.conditioners), lm.fuser,
                           version, overwrite)
