"""A checkpoint's `xp.cfg`, read as untrusted input and exactly as leniently as upstream.

No upstream counterpart as a file: upstream's `models/loaders.py` (audiocraft 1.3.0) does
`OmegaConf.create(pkg['xp.cfg'])` and lets its builders read what they need, so `???` and
`${oc.env:...}` in sections no builder reads (`datasource.*`, `dora.dir`) never matter. We keep
that leniency, but never let OmegaConf evaluate anything: the keys a builder reads are resolved
here, by a resolver that knows only plain `${path}` interpolation.

A checkpoint's config may not:
- run a resolver (`${oc.env:X}`, `${oc.decode:...}`, custom ones): refused when a builder reads
  it, left unevaluated (and escaped in `lm.cfg`) elsewhere;
- choose where we write or what we read outside its folder: settings such as `cache_dir`,
  `cache_path`, `eval_wavs` are dropped with a warning (the user sets them, e.g.
  `enable_cache(directory=...)`); an encoder `name` that is a path must stay inside the checkpoint
  folder, or be an existing model folder (config.json), which is only read;
- use YAML anchors/aliases (exponential "billion laughs" expansion) or exceed `MAX_CONFIG_CHARS`.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Mapping

MAX_CONFIG_CHARS = 200_000  # real xp.cfg files are ~10 KB; pure-Python YAML takes seconds per 100 KB
MAX_NESTING = 64  # flow brackets deep, or columns of indentation / 4: real configs nest under 10 levels
# Keys the LM builders (ours, H-gen's MAGNeT/AudioGen, upstream's) read; missing required ones are named.
LM_REQUIRED = ("lm_model", "transformer_lm", "fuser", "conditioners", "classifier_free_guidance",
               "dataset.segment_duration")
LM_OPTIONAL = ("codebooks_pattern", "attribute_dropout", "sample_rate", "channels", "interleave_stereo_codebooks",
               "compression_model_n_q", "masking", "solver", "device", "dtype", "quantize")
CODEC_REQUIRED = ("compression_model", "sample_rate", "channels", "encodec", "seanet")
CODEC_OPTIONAL = ("rvq", "no_quant", "device", "dtype")
# Conditioner settings that name a place on disk: the user's to choose, never the checkpoint's.
FILESYSTEM_KEYS = ("cache_dir", "cache_path", "eval_wavs")
_PLAIN = re.compile(r"\$\{\s*(\.*[A-Za-z_][\w-]*(?:\.[\w-]+)*)\s*\}")
_RESOLVER = re.compile(r"\$\{\s*([A-Za-z_][\w.-]*)\s*:")
_MAX_DEPTH = 32


class CheckpointError(ValueError):
    """A checkpoint that cannot be found or read, with what to do about it."""


def parse(text_or_mapping: Any, where: str = "xp.cfg") -> dict:
    """The raw (unresolved) config as plain containers; bad YAML, anchors and huge texts refused."""
    import yaml
    from omegaconf import OmegaConf

    if isinstance(text_or_mapping, bytes):
        text_or_mapping = text_or_mapping.decode("utf-8", errors="replace")
    if isinstance(text_or_mapping, str):
        if len(text_or_mapping) > MAX_CONFIG_CHARS:
            raise CheckpointError(f"{where}: xp.cfg is {len(text_or_mapping):,} characters (at most "
                                  f"{MAX_CONFIG_CHARS:,}); not a training config")
        _check_nesting(text_or_mapping, where)
        try:
            events = yaml.parse(text_or_mapping, getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml if there
            if any(isinstance(event, yaml.AliasEvent) for event in events):
                raise CheckpointError(f"{where}: xp.cfg uses YAML anchors/aliases, which checkpoint configs never "
                                      "need and which are refused (they can expand exponentially)")
            cfg = OmegaConf.create(text_or_mapping)
        except yaml.YAMLError as exc:
            raise CheckpointError(f"{where}: xp.cfg is not valid YAML: {exc}") from None
        except RecursionError:
            raise CheckpointError(f"{where}: xp.cfg is nested too deeply to be a training config") from None
    elif isinstance(text_or_mapping, Mapping):
        cfg = OmegaConf.create(dict(text_or_mapping))
    else:
        raise CheckpointError(f"{where}: xp.cfg is a {type(text_or_mapping).__name__}, expected YAML text")
    raw = OmegaConf.to_container(cfg, resolve=False)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where}: xp.cfg is a YAML {type(raw).__name__}, expected a mapping of keys")
    return raw


def _check_nesting(text: str, where: str) -> None:
    """Refuse deep nesting before the YAML parser sees it (its time grows fast with the depth)."""
    depth = deepest = 0
    for match in re.finditer(r"[\[\]{}]", text):  # brackets inside quoted strings count too: a bound, not a parse
        depth = max(0, depth + (1 if match.group() in "[{" else -1))
        deepest = max(deepest, depth)
    indent = max((len(line) - len(line.lstrip(" ")) for line in text.splitlines()), default=0)
    if deepest > MAX_NESTING or indent > 4 * MAX_NESTING:
        raise CheckpointError(f"{where}: xp.cfg is nested too deeply to be a training config ({deepest} brackets, "
                              f"{indent} columns of indentation)")


def _lookup(raw: dict, path: str) -> Any:
    node: Any = raw
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def _target(expr: str, key: str) -> str:
    """The absolute path of a `${...}` expression met at `key` (relative forms `.x`, `..x` too)."""
    dots = len(expr) - len(expr.lstrip("."))
    if not dots:
        return expr
    parent = key.split(".")[:-dots]  # `.x`: a sibling of `key`; each further dot one level up
    return ".".join([*parent, expr[dots:]])


def _resolve(raw: dict, value: Any, key: str, where: str, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise CheckpointError(f"{where}: {key} is part of an interpolation cycle")
    if isinstance(value, dict):
        return {k: _resolve(raw, v, f"{key}.{k}", where, depth) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(raw, v, f"{key}[{i}]", where, depth) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    if value == "???":
        raise CheckpointError(f"{where}: {key} is '???' (a mandatory value never filled in), and building the "
                              "model reads it; set it in the checkpoint's xp.cfg")
    if "${" not in value:
        return value
    resolver = _RESOLVER.search(value)
    if resolver:  # named only: its argument (an environment variable name...) is not echoed
        raise CheckpointError(f"{where}: {key} calls the resolver {resolver.group(1)!r}; a checkpoint's config may "
                              "only use plain ${path} interpolations, and resolvers are never run on it")

    def lookup(match: re.Match) -> Any:
        path = _target(match.group(1), key)
        try:
            found = _lookup(raw, path)
        except KeyError:
            raise CheckpointError(f"{where}: {key} interpolates ${{{match.group(1)}}}, but the config has no "
                                  f"{path}") from None
        return _resolve(raw, found, path, where, depth + 1)

    whole = _PLAIN.fullmatch(value)
    if whole:
        return lookup(whole)
    text = _PLAIN.sub(lambda m: str(lookup(m)), value)
    if "${" in text:
        raise CheckpointError(f"{where}: {key} holds an interpolation that is not a plain ${{path}} ({value!r}); "
                              "only those are read from a checkpoint's config")
    return text


def select(raw: dict, required: tuple[str, ...], optional: tuple[str, ...], where: str = "xp.cfg") -> dict:
    """The keys a builder reads, resolved, as a nested plain dict; nothing else is looked at."""
    out: dict = {}
    for path in (*required, *optional):
        try:
            value = _lookup(raw, path)
        except KeyError:
            if path in required:
                raise CheckpointError(f"{where}: the config has no {path}, which building the model reads "
                                      "(is this an audiocraft training config?)") from None
            continue
        node = out
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = _resolve(raw, value, path, where)
    return out


def lm_builder_config(raw: dict, where: str = "xp.cfg") -> dict:
    return select(raw, LM_REQUIRED, LM_OPTIONAL, where)


def codec_builder_config(raw: dict, where: str = "xp.cfg") -> dict:
    return select(raw, CODEC_REQUIRED, CODEC_OPTIONAL, where)


def generator_kind(cfg: Mapping) -> str:
    """Which generator class a checkpoint's LM config is for: 'musicgen', 'audiogen' or 'magnet'.

    As upstream tells them apart: MAGNeT (music and audio) by its LM, AudioGen by its solver;
    melody checkpoints are MusicGen ones with a `chroma_stem` conditioner.
    """
    if cfg.get("lm_model") == "transformer_lm_magnet":
        return "magnet"
    if cfg.get("solver") == "audiogen":
        return "audiogen"
    return "musicgen"


def drop_filesystem_settings(cfg: dict, where: str = "xp.cfg") -> None:
    """Clear (set to None), in place and with a warning, conditioner settings that name a place on disk."""
    for attribute, conditioner in (cfg.get("conditioners") or {}).items():
        kwargs = conditioner.get(conditioner.get("model")) if isinstance(conditioner, dict) else None
        if not isinstance(kwargs, dict):
            continue
        for key in FILESYSTEM_KEYS:
            if kwargs.get(key) not in (None, False, "", [], {}):
                warnings.warn(f"{where}: ignored conditioners.{attribute}.{conditioner['model']}.{key} (a path "
                              "written in the checkpoint); paths to write or read come from you, e.g. "
                              "`enable_cache(directory=...)`", stacklevel=3)
            if key in kwargs:  # eval_wavs is a constructor argument (None: none); the others are not read
                kwargs[key] = None


def check_model_path(name: str, folder: Path, where: str, what: str) -> str:
    """A model name from a checkpoint's config, made safe: a hub id as is, './x' absolute inside `folder`.

    Any other path must be an existing model folder (holding config.json), only read; a name
    leaving `folder` through './' (`./../x`, a symlink out) or naming a device or a file is refused
    before anything reads it.
    """
    if name.startswith(("./", "../")):
        path = (folder / name).resolve()
        if name.startswith("./") and not path.is_relative_to(folder.resolve()):
            raise CheckpointError(f"{where}: {what} {name!r} leaves the checkpoint folder {folder}; pass the model "
                                  "yourself instead (`set_text_encoder`, `swap --encoder`)")
    elif name.startswith(("/", "~")):
        path = Path(name).expanduser()
    else:
        return name  # a hub id: looked up in the local Hugging Face cache only
    if not (path.is_dir() and (path / "config.json").is_file()):
        raise CheckpointError(f"{where}: {what} {name!r} is not a model folder (one holding config.json); a "
                              "checkpoint may only name hub ids, folders inside itself ('./x') or existing model "
                              "folders")
    return str(path)


def check_encoder_paths(cfg: dict, folder: Path, where: str = "xp.cfg") -> None:
    """Every conditioner's `name`, through `check_model_path`, in place."""
    for attribute, conditioner in (cfg.get("conditioners") or {}).items():
        kwargs = conditioner.get(conditioner.get("model")) if isinstance(conditioner, dict) else None
        if isinstance(kwargs, dict) and isinstance(kwargs.get("name"), str):
            kwargs["name"] = check_model_path(kwargs["name"], folder, where,
                                              f"conditioners.{attribute} names the encoder")


def safe_view(raw: dict, resolved: dict) -> Any:
    """`lm.cfg`: the whole config as an OmegaConf DictConfig (attribute access, as upstream's), with
    the builder keys replaced by their resolved values and every resolver call elsewhere escaped,
    so that reading any key never runs one. `???` stays (reading it raises, as upstream)."""
    from omegaconf import OmegaConf

    def escape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: escape(v) for k, v in value.items()}
        if isinstance(value, list):
            return [escape(v) for v in value]
        if isinstance(value, str) and "${" in _PLAIN.sub("", value):  # anything but plain ${path}
            return value.replace("${", "\\${")
        return value

    view = escape(raw)
    for key, value in resolved.items():  # whole sections, but `dataset` of which builders read one key
        if key == "dataset" and isinstance(view.get(key), dict):
            view[key] = {**view[key], **value}
        else:
            view[key] = value
    cfg = OmegaConf.create(view)
    OmegaConf.set_struct(cfg, False)
    return cfg
