"""Quantized MusicGen checkpoints: write a folder whose LM holds int8/int4 (or w8a8, int8-dynamic) weights.

No upstream counterpart. `MusicGen.quantize` quantizes in memory (`modules/weight_quant.py`);
`save_quantized` writes the LM through the one checkpoint writer (`utils/export.py`), its
`xp.cfg` gaining `quantize: {mode, group_size}`, which `models/loaders.py` reads to build the
quantized holders before loading the weights (plain tensors: it loads with `weights_only`).
The codec file is copied unchanged.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from .models.loaders import COMPRESSION_FILE, LM_FILE, resolve_file
from .modules.weight_quant import QuantizedWeight, quantization_of
from .utils.export import copy_file, export_lm

VERSION = "audiocraft_patched.quantize"


def quantized_bytes(lm) -> tuple[int, int]:
    """(bytes of the LM's quantized weights, bytes their dense float32 form would take)."""
    holders = [m for m in lm.modules() if isinstance(m, QuantizedWeight)]
    return sum(h.nbytes() for h in holders), sum(h.shape.numel() * 4 for h in holders)


def describe_quantization(lm) -> str:
    """For `inspect`: how the LM's weights are stored."""
    quantized = quantization_of(lm.transformer)
    if quantized is None:
        return "dense (not quantized)"
    size, dense = quantized_bytes(lm)
    how = {"int8": "per output channel", "w8a8": "per output channel, activations int8 per row",
           "int8-dynamic": "per output channel, activations 7-bit per product input (fbgemm)"}.get(
        quantized["mode"], f"groups of {quantized['group_size']}")
    return (f"{quantized['mode']} ({how}), transformer linear weights {size / 1e6:.2f} MB "
            f"(float32: {dense / 1e6:.2f} MB); embeddings and heads dense")


def save_quantized(model, out: str | Path, overwrite: bool = False) -> dict[str, int]:
    """Write a quantized `model` (MusicGen after `quantize`) as a checkpoint folder `out`.

    Returns:
        {file name: size in bytes} of the files written.
    """
    quantized = quantization_of(model.lm.transformer)
    if quantized is None:
        raise ValueError("the model is not quantized; call model.quantize('int8', 'int4', 'w8a8' or "
                         "'int8-dynamic') first")
    try:
        codec = resolve_file(model.name, COMPRESSION_FILE)
    except (OSError, ValueError) as exc:
        raise ValueError(f"the codec of {model.name!r} is not a file that can be copied ({exc}); quantize a "
                         "model loaded from a folder or the local cache") from None
    out = Path(out)
    for name in (LM_FILE, COMPRESSION_FILE):  # both checked before either is written
        if (out / name).exists() and not overwrite:
            raise FileExistsError(f"{out / name} already exists; pass overwrite=True (--overwrite) to replace it")
    cfg = OmegaConf.to_container(model.lm.cfg)
    cfg["quantize"] = quantized
    export_lm(out, model.lm, cfg, version=VERSION, overwrite=overwrite)
    copy_file(codec, out / COMPRESSION_FILE, overwrite=overwrite)
    return {name: (out / name).stat().st_size for name in (LM_FILE, COMPRESSION_FILE)}
