"""Upstream checkpoint files -> our config + state dict.

Mirrors `audiocraft/models/loaders.py` (audiocraft 1.3.0). A MusicGen export is a folder (or a
hub repo) with two files, both `torch.save`d dicts readable with `weights_only=True`:

- `state_dict.bin`: `{'best_state': lm.state_dict(), 'xp.cfg': <YAML of the training config>, ...}`
- `compression_state_dict.bin`: the same for EnCodec, or `{'pretrained': <hub id>}`.

A hub id such as `facebook/musicgen-small` is looked up in the local Hugging Face cache only
(never downloaded here); everything that translates upstream's config lives in this file and in
`xp_config.py`. A checkpoint folder is untrusted input: before anything is built, the file is
checked (a regular file inside its folder, of a sane size), memory-mapped, the config read with
plain `${path}` interpolation only (`xp_config.py` says what else a config may not do), and the
config checked against the weights' key count and shapes; non-finite weights are refused.
"""
from __future__ import annotations

import os
import pickle
import re
import stat
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from ..modules.weight_quant import quantize_as_recorded
from . import builders, xp_config
from .encodec import CompressionModel
from .lm import LMModel
from .xp_config import CheckpointError  # noqa: F401  (defined beside the config reader; public here)

LM_FILE = "state_dict.bin"
COMPRESSION_FILE = "compression_state_dict.bin"
# Config keys of older checkpoints that today's builders no longer accept (upstream deletes them too).
_LEGACY_KEYS = ("conditioners.self_wav.chroma_stem.cache_path", "conditioners.args.merge_text_conditions_p",
                "conditioners.args.drop_desc_p")
# Far above any audiocraft release (musicgen-large's state_dict.bin: 6.5 GB): past it, an attack or an accident.
MAX_CHECKPOINT_BYTES = 64 * 2**30
_SHOWN = 5  # keys named in an error, the first few


def get_audiocraft_cache_dir() -> str | None:
    return os.environ.get("AUDIOCRAFT_CACHE_DIR")


def check_file(file: Path, root: Path | None = None) -> Path:
    """`file`, refused unless a regular file of a sane size, inside `root` (when given) once links are followed."""
    try:
        real = file.resolve(strict=True)
        info = real.stat()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise CheckpointError(f"{file} cannot be opened: {exc}") from None
    if root is not None and not real.is_relative_to(root.resolve()):
        raise CheckpointError(f"{file} is a link leading out of its folder {root} (to {real}); a checkpoint's files "
                              "must be inside it")
    if stat.S_ISDIR(info.st_mode):
        raise CheckpointError(f"{file} is a folder, not a checkpoint file")
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(f"{file} is not a regular file (a device, pipe or socket); refused")
    if info.st_size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{file} is {info.st_size:,} bytes, more than any audiocraft checkpoint "
                              f"(at most {MAX_CHECKPOINT_BYTES:,}); refused")
    return file


def resolve_file(name_or_path: str | Path, filename: str, cache_dir: str | None = None) -> Path:
    """Find `filename` for a file path, a folder, or a hub id present in the local HF cache (then checked)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        file = path / filename
        if not os.path.lexists(file):
            present = sorted(p.name for p in path.iterdir())[:10]
            raise CheckpointError(
                f"{path} has no {filename}. A MusicGen checkpoint folder holds {LM_FILE} and {COMPRESSION_FILE} "
                f"(upstream's export format); found {present or 'nothing'}.")
        return check_file(file, path)
    if os.path.lexists(path):
        return check_file(path)  # a file named by the user: theirs to point anywhere
    name = str(name_or_path)
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep in name.replace("/", ""):
        raise CheckpointError(f"no such file or folder: {name}")
    from huggingface_hub import hf_hub_download

    try:
        file = Path(hf_hub_download(repo_id=name, filename=filename, cache_dir=cache_dir or get_audiocraft_cache_dir(),
                                    local_files_only=True))
    except Exception as exc:  # the hub raises several types for "not in the cache"
        raise CheckpointError(
            f"{name!r} is neither a folder nor a model in the local Hugging Face cache (looked for {filename}). "
            f"Pass a folder holding {LM_FILE} and {COMPRESSION_FILE}, or fill the cache on a machine with network "
            f"access (`huggingface-cli download {name}`) and copy it over.") from exc
    return check_file(file, file.parents[2])  # snapshots/<rev>/file links into the repo's own blobs/


def load_checkpoint(file: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """`torch.load(weights_only=True)`, memory-mapped when the format allows, with errors naming the file."""
    file = check_file(Path(file))
    on_cpu = torch.device(device).type == "cpu"
    try:
        try:  # memory-mapped: nothing is read until used, so the checks before building cost little
            pkg = torch.load(file, map_location="cpu", weights_only=True, mmap=on_cpu)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            pkg = torch.load(file, map_location="cpu", weights_only=True)  # the legacy (non-zip) format
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{file} is not a readable torch checkpoint (or holds objects other than tensors "
                              f"and plain data, which are refused for safety): {exc}") from exc
    if not isinstance(pkg, dict):
        raise CheckpointError(f"{file} holds a {type(pkg).__name__}, not an audiocraft checkpoint dict")
    if not on_cpu and isinstance(pkg.get("best_state"), dict):
        pkg["best_state"] = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                             for k, v in pkg["best_state"].items()}
    return pkg


def _raw_config(pkg: dict, file: Path) -> dict:
    missing = [key for key in ("xp.cfg", "best_state") if key not in pkg]
    if missing:
        raise CheckpointError(f"{file} lacks {missing}: not an audiocraft export "
                              "(expected {'best_state': ..., 'xp.cfg': ...})")
    raw = xp_config.parse(pkg["xp.cfg"], str(file))
    for key in _LEGACY_KEYS:  # upstream's `_delete_param`
        *parents, last = key.split(".")
        node: Any = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return raw


def _state(pkg: dict, file: Path) -> dict[str, torch.Tensor]:
    state = pkg["best_state"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{file}: best_state is not a dict of tensors (a state dict)")
    return state


def _first(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:_SHOWN]) + (f" (and {len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def check_finite(state: Mapping[str, torch.Tensor], where: Any) -> None:
    """Refuse NaN/inf weights (they would generate silence or noise without a word)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{where}: {len(bad)} tensor(s) hold NaN or infinite values: {_first(bad)}; the "
                              "checkpoint is damaged")


def check_state(expected: Mapping[str, torch.Size], state: Mapping[str, torch.Tensor], where: Any) -> None:
    """The state dict has exactly the keys and shapes of the model built from the config; errors name the keys."""
    missing = set(expected) - set(state)
    extra = set(state) - set(expected)
    wrong = [f"{k} {tuple(state[k].shape)} (the config makes {tuple(expected[k])})"
             for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != tuple(expected[k])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_first(missing)}")
    if extra:
        problems.append(f"{len(extra)} unexpected key(s): {_first(extra)}")
    if wrong:
        problems.append(f"{len(wrong)} wrong shape(s): " + "; ".join(wrong[:_SHOWN]))
    if problems:
        raise CheckpointError(f"{where}: the weights do not match the model its config describes: "
                              + " / ".join(problems))


def _positive(section: Mapping, key: str, where: Any, name: str) -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(f"{where}: {name}.{key} must be a positive integer, got {value!r}")
    return value


def _indices(state: Mapping[str, Any], pattern: str) -> set[str]:
    regex = re.compile(pattern)
    return {m.group(1) for m in map(regex.match, state) if m}


def check_lm_config(cfg: dict, state: Mapping[str, torch.Tensor], where: Any) -> None:
    """Before building: the config's layer and codebook counts and widths are those of the weights.

    What decides the LM's size (layers, codebooks, width, vocabulary, feed-forward) is compared
    with the state dict's keys and shapes, so a config asking for 10^8 layers is an error at once.
    """
    check_conditioners(cfg, where)
    lm = cfg["transformer_lm"]
    dim, n_q, card, layers = (_positive(lm, key, where, "transformer_lm") for key in ("dim", "n_q", "card",
                                                                                          "num_layers"))
    found = len(_indices(state, r"transformer\.layers\.(\d+)\."))
    if found != layers:
        raise CheckpointError(f"{where}: transformer_lm.num_layers is {layers:,}, but the weights hold {found} "
                              "transformer layers; the config does not describe these weights")
    found = len(_indices(state, r"emb\.(\d+)\.weight$"))
    if found != n_q:
        raise CheckpointError(f"{where}: transformer_lm.n_q is {n_q:,}, but the weights hold {found} codebook "
                              "embeddings; the config does not describe these weights")
    hidden = lm.get("hidden_scale", 4)
    if not isinstance(hidden, (int, float)) or isinstance(hidden, bool) or not 0 < hidden <= 64:
        raise CheckpointError(f"{where}: transformer_lm.hidden_scale must be a number in (0, 64], got {hidden!r}")
    expected = {"emb.0.weight": (card + 1, dim), "linears.0.weight": (card, dim),
                "transformer.layers.0.linear1.weight": (int(hidden * dim), dim)}
    for key, shape in expected.items():
        if key in state and tuple(state[key].shape) != shape:
            raise CheckpointError(f"{where}: {key} is {tuple(state[key].shape)}, but transformer_lm (dim {dim}, card "
                                  f"{card}, hidden_scale {hidden}) makes it {shape}; the config does not describe "
                                  "these weights")


def check_conditioners(cfg: dict, where: Any) -> None:
    """Every `conditioners` entry is `{model: NAME, NAME: {...}}` with a NAME this package knows."""
    from ..modules.conditioners import ENCODERS

    for attribute, entry in (cfg.get("conditioners") or {}).items():
        if attribute == "args":  # provider options of older configs, not read
            continue
        model = entry.get("model") if isinstance(entry, dict) else None
        if not isinstance(model, str) or not isinstance(entry.get(model) or {}, dict):
            raise CheckpointError(f"{where}: conditioners.{attribute} must be {{model: NAME, NAME: {{options}}}}, got "
                                  f"{entry!r}"[:300])
        if model not in ENCODERS and model not in builders.UNSUPPORTED_CONDITIONERS:
            raise CheckpointError(f"{where}: conditioners.{attribute} uses the conditioner {model!r}, which "
                                  f"audiocraft_patched does not know; known: {', '.join(sorted(ENCODERS))}")


def check_codec_config(cfg: dict, state: Mapping[str, torch.Tensor], where: Any) -> None:
    """Before building: what decides how many modules the codec has is bounded by the weights."""
    seanet, rvq = cfg.get("seanet") or {}, cfg.get("rvq") or {}
    ratios = seanet.get("ratios") or []
    counts = {"seanet.ratios (length)": len(ratios), "seanet.n_residual_layers": seanet.get("n_residual_layers", 1),
              "seanet.lstm": seanet.get("lstm", 0), "rvq.n_q": rvq.get("n_q", 0)}
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= len(state):
            raise CheckpointError(f"{where}: {key} is {value!r}, which the {len(state)} tensors of the weights "
                                  "cannot hold; the config does not describe these weights")
    if any(isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 4096 for r in ratios):
        raise CheckpointError(f"{where}: seanet.ratios must be integers in [1, 4096], got {ratios!r}")
    found = len(_indices(state, r"quantizer\.vq\.layers\.(\d+)\."))
    if cfg["encodec"].get("quantizer", "rvq") == "rvq" and found != counts["rvq.n_q"]:
        raise CheckpointError(f"{where}: rvq.n_q is {counts['rvq.n_q']}, but the weights hold {found} codebooks")


def load_compression_model_ckpt(name_or_path: str | Path, cache_dir: str | None = None) -> dict:
    return load_checkpoint(resolve_file(name_or_path, COMPRESSION_FILE, cache_dir))


def load_lm_model_ckpt(name_or_path: str | Path, cache_dir: str | None = None) -> dict:
    return load_checkpoint(resolve_file(name_or_path, LM_FILE, cache_dir))


def _pretrained_codec(name: Any, file: Path, device: str | torch.device, cache_dir: str | None) -> CompressionModel:
    """`{'pretrained': NAME}`, as upstream's `CompressionModel.get_pretrained`: a Hugging Face EnCodec."""
    from .hf_encodec import load_hf_encodec

    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{file}: 'pretrained' must name a codec, got {type(name).__name__}")
    if name == "debug_compression_model":
        return builders.get_debug_compression_model(device)
    if name.startswith(("dac_", "//")):
        raise CheckpointError(f"{file} names the pretrained codec {name!r}; only EnCodec codecs are supported")
    path = xp_config.check_model_path(name, file.parent, str(file), "'pretrained' names the codec")
    try:
        model = load_hf_encodec(path, device, cache_dir)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{file}: {exc}") from None
    check_finite(model.state_dict(), f"{file} ({name})")
    return model


def load_compression_model(name_or_path: str | Path, device: str | torch.device = "cpu",
                           cache_dir: str | None = None) -> CompressionModel:
    file = resolve_file(name_or_path, COMPRESSION_FILE, cache_dir)
    pkg = load_checkpoint(file)
    if "pretrained" in pkg:
        return _pretrained_codec(pkg["pretrained"], file, device, cache_dir).eval()
    cfg = xp_config.codec_builder_config(_raw_config(pkg, file), str(file))
    cfg["device"] = str(device)
    state = _state(pkg, file)
    check_codec_config(cfg, state, file)
    try:  # on the meta device: shapes without memory
        skeleton = builders.compression_skeleton(cfg)
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{file}: its codec config cannot be built ({type(exc).__name__}: {exc})") from None
    check_state({k: v.shape for k, v in skeleton.state_dict().items()}, state, file)
    check_finite(state, file)
    model = skeleton.to_empty(device=device)  # every tensor is replaced next (strict)
    model.load_state_dict(state)
    return model.eval()


def lm_config(pkg: dict, file: Path, device: str | torch.device = "cpu") -> dict:
    """The keys of the LM's config that builders read, resolved, with upstream's load-time fix-ups.

    Device and dtype are the caller's; settings naming places on disk are dropped with a warning,
    encoder paths checked and './x' made absolute (`xp_config.py`).
    """
    file = Path(file)
    cfg = xp_config.lm_builder_config(_raw_config(pkg, file), str(file))
    cfg["device"] = str(device)
    cfg["dtype"] = "float32" if str(device) == "cpu" else "float16"
    xp_config.drop_filesystem_settings(cfg, str(file))
    xp_config.check_encoder_paths(cfg, file.parent, str(file))
    return cfg


def read_lm_config(name_or_path: str | Path, device: str | torch.device = "cpu",
                   cache_dir: str | None = None) -> tuple[dict, str]:
    """(builder config, generator kind: 'musicgen', 'audiogen' or 'magnet') of an LM checkpoint.

    The config holds only what builders read (see `xp_config.LM_REQUIRED`), resolved and checked;
    nothing is built.
    """
    file = resolve_file(name_or_path, LM_FILE, cache_dir)
    cfg = lm_config(load_checkpoint(file), file, device)
    return cfg, xp_config.generator_kind(cfg)


def load_lm_model(name_or_path: str | Path, device: str | torch.device = "cpu",
                  cache_dir: str | None = None) -> LMModel:
    file = resolve_file(name_or_path, LM_FILE, cache_dir)
    pkg = load_checkpoint(file)
    raw = _raw_config(pkg, file)
    cfg = lm_config(pkg, file, device)
    state = _state(pkg, file)
    check_lm_config(cfg, state, file)  # before anything is built: a hostile size is an error at once
    check_finite(state, file)
    # The LM's weights are replaced below (strict): not drawn at random first (seconds for musicgen-small). The
    # conditioners' small projections still are, under a forked RNG: loading leaves the caller's RNG as it was.
    with torch.random.fork_rng(devices=[]):
        model = builders.get_lm_model(cfg, init_weights=False)
    if cfg.get("quantize") is not None:  # a quantized checkpoint (quantize.py): its holders, then its weights
        try:
            quantize_as_recorded(model.transformer, cfg["quantize"])
        except ValueError as exc:
            raise CheckpointError(f"{file}: {exc}") from None
    load_lm_state(model, state, file)
    model.cfg = xp_config.safe_view(raw, cfg)  # attribute access as upstream's DictConfig (lm.cfg.dataset...)
    return model.eval()


def resolve_relative_encoders(cfg: dict, folder: Path) -> None:
    """Make encoder names written as './x' (a folder shipped beside the checkpoint) absolute, in place.

    A checkpoint that carries its own text encoder can then be moved or installed anywhere; a
    path leaving `folder` or naming no model folder is refused (`xp_config.check_encoder_paths`).
    """
    xp_config.check_encoder_paths(cfg, Path(folder))


def load_lm_state(model: LMModel, state: dict[str, torch.Tensor], file: Path | str = "checkpoint") -> None:
    """Load an LM state dict; a projection of the wrong width, keys or shapes that differ: errors naming them."""
    own = model.state_dict()
    for key, value in state.items():
        if key.endswith("output_proj.weight") and key in own and own[key].shape != value.shape and value.dim() == 2:
            (out_w, in_w), (lm_w, enc_w) = value.shape, own[key].shape
            if in_w != enc_w:
                raise CheckpointError(
                    f"{file}: {key} maps a {in_w}-wide encoder to the LM, but the chosen encoder is {enc_w} wide. "
                    "Use `audiocraft-patched swap` to put a new encoder in place (it makes a fresh projection), "
                    "then align or fine-tune it.")
            raise CheckpointError(f"{file}: {key} projects to {out_w} features, but the LM is {lm_w} wide "
                                  "(transformer_lm.dim); the config does not describe these weights")
    check_state({k: v.shape for k, v in own.items()}, state, file)
    model.load_state_dict(state)
