"""Config -> modules, for the configs upstream saves in its checkpoints (`xp.cfg`).

Mirrors the MusicGen part of `audiocraft/models/builders.py` (audiocraft 1.3.0): same function
names and config keys. Functions take upstream's OmegaConf config or the same thing as a plain
dict; conditioners are built through the registry of `modules.conditioners`.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..modules.codebooks_patterns import (
    CodebooksPatternProvider,
    CoarseFirstPattern,
    DelayedPatternProvider,
    MusicLMPattern,
    ParallelPatternProvider,
)
from ..modules.conditioners import ConditionFuser, ConditioningProvider, LUTConditioner, build_conditioner
from .encodec import (  # noqa: F401  (re-exported under upstream's names)
    CompressionModel,
    build_compression_model,
    get_debug_compression_model,
    wrap_compression_model as get_wrapped_compression_model,
)
from . import xp_config
from .lm import LMModel
from .lm_magnet import MagnetLMModel, magnet_lm_kwargs

PATTERNS: dict[str, type[CodebooksPatternProvider]] = {
    "delay": DelayedPatternProvider,
    "parallel": ParallelPatternProvider,
    "coarse_first": CoarseFirstPattern,
    "musiclm": MusicLMPattern,
}
# Conditioners of upstream that this package does not implement, and what they are for.
UNSUPPORTED_CONDITIONERS = {
    "clap": "CLAP embedding conditioning",
}


def as_dict(cfg: Any) -> dict:
    """A plain, resolved dict from an OmegaConf config or a mapping."""
    if cfg is None:
        return {}
    if not isinstance(cfg, Mapping):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return {k: as_dict(v) if isinstance(v, Mapping) or type(v).__name__ == "DictConfig" else v
            for k, v in cfg.items()}


def get_codebooks_pattern_provider(n_q: int, cfg: Any) -> CodebooksPatternProvider:
    cfg = as_dict(cfg)
    name = cfg.get("modeling")
    if name not in PATTERNS:
        raise ValueError(f"codebooks pattern {name!r} is not supported; use one of {sorted(PATTERNS)}")
    return PATTERNS[name](n_q, **(cfg.get(name) or {}))


def get_condition_fuser(cfg: Any) -> ConditionFuser:
    fuser = dict(as_dict(cfg)["fuser"])
    fuse2cond = {method: list(fuser.pop(method, None) or []) for method in ConditionFuser.FUSING_METHODS}
    return ConditionFuser(fuse2cond=fuse2cond, **fuser)


def get_conditioner_provider(output_dim: int, cfg: Any) -> ConditioningProvider:
    """Build every conditioner of `cfg.conditioners` (`{attr: {model: NAME, NAME: {...kwargs}}}`)."""
    cfg = as_dict(cfg)
    device = cfg.get("device", "cpu")
    conditioners = {}
    for attribute, cond_cfg in (cfg.get("conditioners") or {}).items():
        if attribute == "args":  # provider options of older configs, no longer used
            continue
        model = cond_cfg["model"]
        if model in UNSUPPORTED_CONDITIONERS:
            raise NotImplementedError(f"conditioner {attribute!r} uses {model!r} ({UNSUPPORTED_CONDITIONERS[model]}), "
                                      "which audiocraft_patched does not support yet; text-only MusicGen checkpoints "
                                      "work")
        kwargs = {"device": device, **(cond_cfg.get(model) or {})}  # every conditioner takes `device`, as upstream's
        if model == "chroma_stem":  # as upstream: the melody chroma is matched to the training segment length
            kwargs.setdefault("duration", cfg["dataset"]["segment_duration"])
        conditioners[str(attribute)] = build_conditioner(model, output_dim, **kwargs)
    return ConditioningProvider(conditioners, device=device)


def builder_config(cfg: Any, kind: str) -> dict:
    """The keys an LM (`kind='lm'`) or codec (`'codec'`) builder reads, as a plain resolved dict.

    Takes upstream's OmegaConf config (e.g. hydra-composed, with `???` in `datasource.*`) or a
    dict: only the keys builders read are resolved, with plain `${path}` interpolation only
    (`xp_config.py`); a missing one is named in the error.
    """
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(cfg, resolve=False) if type(cfg).__name__ == "DictConfig" else as_dict(cfg)
    if kind == "lm":  # the training segment is read by the chroma conditioner only, here
        return xp_config.select(raw, xp_config.LM_REQUIRED[:-1], (*xp_config.LM_OPTIONAL, "dataset.segment_duration"),
                                "config")
    return xp_config.select(raw, xp_config.CODEC_REQUIRED, xp_config.CODEC_OPTIONAL, "config")


def compression_skeleton(cfg: Any) -> CompressionModel:
    """The compression model of `cfg` on the meta device: its structure and shapes, no memory, no random draws."""
    cfg = builder_config(cfg, "codec")
    with torch.device("meta"):
        return build_compression_model({**cfg, "device": "meta"})


def get_compression_model(cfg: Any, init_weights: bool = True) -> CompressionModel:
    """Build the compression model of an upstream config (`encodec.build_compression_model`).

    Args:
        cfg: the config.
        init_weights: False when a checkpoint replaces every weight next: the model is made on the
            meta device (no random draws, no memory), then given empty storage on `cfg.device`.
    """
    cfg = builder_config(cfg, "codec")
    if init_weights:
        return build_compression_model(cfg)
    return compression_skeleton(cfg).to_empty(device=cfg.get("device", "cpu"))


def get_lm_model(cfg: Any, init_weights: bool = True) -> LMModel:
    """Build the LM of a MusicGen config (`lm_model: transformer_lm`).

    `init_weights=False`: for a checkpoint that replaces every weight next (see `LMModel`).
    """
    cfg = builder_config(cfg, "lm")
    if cfg.get("lm_model") not in ("transformer_lm", "transformer_lm_magnet"):
        raise ValueError(f"lm_model {cfg.get('lm_model')!r} is not supported; use 'transformer_lm' (MusicGen, "
                         "AudioGen) or 'transformer_lm_magnet' (MAGNeT)")
    kwargs = dict(cfg["transformer_lm"])
    lm_class = LMModel
    if cfg["lm_model"] == "transformer_lm_magnet":  # span length and segment as upstream's load_lm_model_magnet
        lm_class = MagnetLMModel
        kwargs.update(magnet_lm_kwargs(cfg))
    n_q = kwargs["n_q"]
    q_modeling = kwargs.pop("q_modeling", None)
    pattern_cfg = cfg.get("codebooks_pattern") or {}
    if pattern_cfg.get("modeling") is None:
        if q_modeling is None:
            raise ValueError("config needs codebooks_pattern.modeling (or transformer_lm.q_modeling)")
        pattern_cfg = {"modeling": q_modeling, "delay": {"delays": list(range(n_q))}}
    fuser = get_condition_fuser(cfg)
    device = cfg.get("device", "cpu")
    provider = get_conditioner_provider(kwargs["dim"], cfg).to(device)
    if fuser.fuse2cond["cross"]:
        kwargs["cross_attention"] = True  # upstream enforces it the same way
    guidance = cfg["classifier_free_guidance"]
    return lm_class(
        pattern_provider=get_codebooks_pattern_provider(n_q, pattern_cfg),
        condition_provider=provider,
        fuser=fuser,
        cfg_dropout=guidance["training_dropout"],
        cfg_coef=guidance["inference_coef"],
        attribute_dropout=cfg.get("attribute_dropout") or {},
        dtype=getattr(torch, cfg.get("dtype", "float32")),
        device=device,
        init_weights=init_weights,
        **kwargs,
    ).to(device)


def get_debug_lm_model(device: str = "cpu") -> LMModel:
    """A tiny LM (dim 16, 2 layers, 4 codebooks of 400) conditioned by a hashed-text lookup table."""
    dim = 16
    provider = ConditioningProvider({"description": LUTConditioner(n_bins=128, dim=dim, output_dim=dim)})
    fuser = ConditionFuser({"cross": ["description"]})
    lm = LMModel(DelayedPatternProvider(n_q=4), provider, fuser, n_q=4, card=400, dim=dim, num_heads=4,
                 num_layers=2, cross_attention=True, causal=True)
    return lm.to(device).eval()
