"""Upstream checkpoint files -> our config + state dict.

Mirrors `audiocraft/models/loaders.py` (audiocraft 1.3.0). A MusicGen export is a folder (or a
hub repo) with two files, both `torch.save`d dicts readable with `weights_only=True`:

- `state_dict.bin`: `{'best_state': lm.state_dict(), 'xp.cfg': <YAML of the training config>, ...}`
- `compression_state_dict.bin`: the same for EnCodec, or `{'pretrained': <hub id>}`.

A hub id such as `facebook/musicgen-small` is looked up in the local Hugging Face cache only
(never downloaded here); everything that translates upstream's config lives in this file.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from . import builders
from .encodec import CompressionModel
from .lm import LMModel

LM_FILE = "state_dict.bin"
COMPRESSION_FILE = "compression_state_dict.bin"
# Config keys of older checkpoints that today's builders no longer accept (upstream deletes them too).
_LEGACY_KEYS = ("conditioners.self_wav.chroma_stem.cache_path", "conditioners.args.merge_text_conditions_p",
                "conditioners.args.drop_desc_p")


class CheckpointError(ValueError):
    """A checkpoint that cannot be found or read, with what to do about it."""


def get_audiocraft_cache_dir() -> str | None:
    return os.environ.get("AUDIOCRAFT_CACHE_DIR")


def resolve_file(name_or_path: str | Path, filename: str, cache_dir: str | None = None) -> Path:
    """Find `filename` for a file path, a folder, or a hub id present in the local HF cache."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        file = path / filename
        if not file.is_file():
            present = sorted(p.name for p in path.iterdir())[:10]
            raise CheckpointError(
                f"{path} has no {filename}. A MusicGen checkpoint folder holds {LM_FILE} and {COMPRESSION_FILE} "
                f"(upstream's export format); found {present or 'nothing'}.")
        return file
    name = str(name_or_path)
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep in name.replace("/", ""):
        raise CheckpointError(f"no such file or folder: {name}")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=name, filename=filename, cache_dir=cache_dir or get_audiocraft_cache_dir(),
                                    local_files_only=True))
    except Exception as exc:  # the hub raises several types for "not in the cache"
        raise CheckpointError(
            f"{name!r} is neither a folder nor a model in the local Hugging Face cache (looked for {filename}). "
            f"Pass a folder holding {LM_FILE} and {COMPRESSION_FILE}, or fill the cache on a machine with network "
            f"access (`huggingface-cli download {name}`) and copy it over.") from exc


def load_checkpoint(file: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """`torch.load(weights_only=True)` with errors that name the file and the problem."""
    try:
        pkg = torch.load(file, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{file} is not a readable torch checkpoint (or holds objects other than tensors "
                              f"and plain data, which are refused for safety): {exc}") from exc
    if not isinstance(pkg, dict):
        raise CheckpointError(f"{file} holds a {type(pkg).__name__}, not an audiocraft checkpoint dict")
    return pkg


def _config(pkg: dict, file: Path) -> dict:
    from omegaconf import OmegaConf

    missing = [key for key in ("xp.cfg", "best_state") if key not in pkg]
    if missing:
        raise CheckpointError(f"{file} lacks {missing}: not an audiocraft export "
                              "(expected {'best_state': ..., 'xp.cfg': ...})")
    cfg = OmegaConf.create(pkg["xp.cfg"])
    OmegaConf.set_struct(cfg, False)
    for key in _LEGACY_KEYS:
        *parents, last = key.split(".")
        node = OmegaConf.select(cfg, ".".join(parents))
        if node is not None and last in node:
            del node[last]
    return builders.as_dict(cfg)


def load_compression_model_ckpt(name_or_path: str | Path, cache_dir: str | None = None) -> dict:
    return load_checkpoint(resolve_file(name_or_path, COMPRESSION_FILE, cache_dir))


def load_lm_model_ckpt(name_or_path: str | Path, cache_dir: str | None = None) -> dict:
    return load_checkpoint(resolve_file(name_or_path, LM_FILE, cache_dir))


def load_compression_model(name_or_path: str | Path, device: str | torch.device = "cpu",
                           cache_dir: str | None = None) -> CompressionModel:
    file = resolve_file(name_or_path, COMPRESSION_FILE, cache_dir)
    pkg = load_checkpoint(file)
    if "pretrained" in pkg:
        raise CheckpointError(f"{file} points to the pretrained codec {pkg['pretrained']!r} instead of holding "
                              "weights; audiocraft_patched loads codecs from exported weights only")
    cfg = _config(pkg, file)
    cfg["device"] = str(device)
    # Every tensor is replaced below (strict): no need to draw them at random first.
    model = builders.get_compression_model(cfg, init_weights=False)
    model.load_state_dict(pkg["best_state"])
    return model.eval()


def lm_config(pkg: dict, file: Path, device: str | torch.device = "cpu") -> dict:
    """The LM's training config with upstream's load-time fix-ups (device, dtype, legacy keys)."""
    cfg = _config(pkg, file)
    cfg["device"] = str(device)
    cfg["dtype"] = "float32" if str(device) == "cpu" else "float16"
    return cfg


def load_lm_model(name_or_path: str | Path, device: str | torch.device = "cpu",
                  cache_dir: str | None = None) -> LMModel:
    file = resolve_file(name_or_path, LM_FILE, cache_dir)
    pkg = load_checkpoint(file)
    cfg = lm_config(pkg, file, device)
    resolve_relative_encoders(cfg, file.parent)
    # The LM's weights are replaced below (strict): not drawn at random first (seconds for musicgen-small). The
    # conditioners' small projections still are, under a forked RNG: loading leaves the caller's RNG as it was.
    with torch.random.fork_rng(devices=[]):
        model = builders.get_lm_model(cfg, init_weights=False)
    load_lm_state(model, pkg["best_state"], file)
    model.cfg = cfg
    return model.eval()


def resolve_relative_encoders(cfg: dict, folder: Path) -> None:
    """Make encoder names written as './x' (a folder shipped beside the checkpoint) absolute, in place.

    A checkpoint that carries its own text encoder can then be moved or installed anywhere.
    """
    for conditioner in (cfg.get("conditioners") or {}).values():
        if not isinstance(conditioner, dict):
            continue
        kwargs = conditioner.get(conditioner.get("model"))
        name = kwargs.get("name") if isinstance(kwargs, dict) else None
        if isinstance(name, str) and name.startswith(("./", "../")):
            kwargs["name"] = str((folder / name).resolve())


def load_lm_state(model: LMModel, state: dict[str, torch.Tensor], file: Path | str = "checkpoint") -> None:
    """Load an LM state dict; a projection of the wrong width gets an error that says what to do."""
    own = model.state_dict()
    for key, value in state.items():
        if key.endswith("output_proj.weight") and key in own and own[key].shape != value.shape:
            raise CheckpointError(
                f"{file}: {key} maps a {value.shape[1]}-wide encoder to the LM, but the chosen encoder is "
                f"{own[key].shape[1]} wide. Use `audiocraft-patched swap` to put a new encoder in place "
                "(it makes a fresh projection), then align or fine-tune it.")
    model.load_state_dict(state)
