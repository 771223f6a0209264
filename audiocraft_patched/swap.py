"""Put another Hugging Face text encoder in place of a MusicGen's T5: in memory or as a new checkpoint.

No upstream counterpart. `set_text_encoder` swaps the conditioner of a loaded `MusicGen`;
`swap_checkpoint` (and `audiocraft-patched swap MODEL --encoder NAME_OR_DIR -o OUT_DIR`) writes a
checkpoint in upstream's export format whose config says `model: hf`, which
`MusicGen.get_pretrained(OUT_DIR)` loads back. The encoder's projection to the LM width
(`output_proj`) is kept when the new encoder has the old one's width and `keep_projection` allows
it; otherwise it is new (random, seeded): the LM was trained on the old encoder's space, so
music follows the text again only once the projection is aligned or fine-tuned. Which one
happened is recorded (`projection_origin`, and `swapped_projection` in the config) and shown by
`audiocraft-patched inspect`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .modules.conditioners.hf_encoder import DTYPES, HFEncoderConditioner
from .modules.conditioners.hf_family import POOLINGS

KEEP_CHOICES = ("auto", True, False)


def _encoder_name(name_or_dir: str | Path) -> str:
    """A folder is recorded as an absolute path (the checkpoint may be loaded from elsewhere)."""
    path = Path(name_or_dir).expanduser()
    return str(path.resolve()) if path.is_dir() else str(name_or_dir)


def _dtype_name(dtype: torch.dtype | None) -> str | None:
    return next((name for name, value in DTYPES.items() if value == dtype), None)


def conditioner_config(cond: HFEncoderConditioner) -> dict:
    """The `conditioners.<attr>` block (`model: hf`) that rebuilds `cond` with the same settings."""
    return {"model": "hf", "hf": {
        "name": cond.name, "finetune": cond.finetune, "word_dropout": cond.word_dropout, "pooling": cond.pooling,
        "layer": cond.layer, "max_length": cond.max_length, "prompt_template": cond.prompt_template,
        "normalize": cond.normalize, "dtype": _dtype_name(cond.dtype),
        "autocast_dtype": _dtype_name(cond.autocast_dtype),
        "swapped_projection": cond.swapped_projection}}


def _decide_keep(keep_projection: str | bool, old_width: int | None, new: HFEncoderConditioner) -> bool:
    if keep_projection not in KEEP_CHOICES:
        raise ValueError(f"keep_projection must be 'auto', True or False, got {keep_projection!r}")
    if keep_projection is True and old_width != new.dim:
        raise ValueError(f"cannot keep output_proj: it takes {old_width}-wide encoder states, but {new.name!r} gives "
                         f"{new.dim}-wide ones; use keep_projection='auto' or False for a new projection")
    return keep_projection is True or (keep_projection == "auto" and old_width == new.dim)


def _new_projection(cond: HFEncoderConditioner, seed: int | None) -> None:
    """Re-initialise `output_proj` (nn.Linear's default init), from `seed` if given, leaving the global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        cond.output_proj.reset_parameters()


def set_text_encoder(model, name_or_dir: str | Path, attribute: str = "description", pooling: str | None = None,
                     layer: int | None = None, keep_projection: str | bool = "auto", max_length: int | None = None,
                     prompt_template: str | None = None, dtype: str | None = None, finetune: bool = False,
                     seed: int | None = 0, **kwargs) -> HFEncoderConditioner:
    """Replace the text conditioner `attribute` of a loaded MusicGen by one on another encoder.

    Args:
        model: a `MusicGen`.
        name_or_dir: hub id (from the local cache when offline) or folder of the new encoder.
        attribute: which text condition to swap ('description' in MusicGen).
        pooling, layer, max_length, prompt_template, dtype, finetune, **kwargs: options of
            `HFEncoderConditioner`.
        keep_projection: 'auto' keeps `output_proj` when the widths match, True insists (error
            otherwise), False always makes a new one.
        seed: seed of a new projection's initialisation (None: the global RNG).
    Returns:
        The new conditioner, already in place; its `projection_origin` is 'kept' or 'new'.
    """
    provider = model.lm.condition_provider
    if attribute not in provider.conditioners:
        raise KeyError(f"this model has no text condition {attribute!r}; it has {sorted(provider.conditioners)}")
    old = provider.conditioners[attribute]
    kwargs.setdefault("word_dropout", getattr(old, "word_dropout", 0.0))
    new = HFEncoderConditioner(_encoder_name(name_or_dir), output_dim=old.output_proj.out_features, finetune=finetune,
                               device=model.device, pooling=pooling, layer=layer, max_length=max_length,
                               prompt_template=prompt_template, dtype=dtype, **kwargs)
    if _decide_keep(keep_projection, old.output_proj.in_features, new):
        new.output_proj.load_state_dict(old.output_proj.state_dict())
        new.projection_origin = "kept"
    else:
        _new_projection(new, seed)
    new.swapped_projection = new.projection_origin
    new.to(next(old.output_proj.parameters()).device).train(old.training)
    provider.conditioners[attribute] = new
    cfg = getattr(model.lm, "cfg", None)
    if cfg is not None:  # a later export of this model then records the new encoder
        cfg.setdefault("conditioners", {})[attribute] = conditioner_config(new)
    return new


def _atomic_write(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def swap_checkpoint(model_name_or_dir: str | Path, encoder: str | Path, out_dir: str | Path, pooling: str | None = None,
                    layer: int | None = None, attribute: str = "description", keep_projection: str | bool = "auto",
                    overwrite: bool = False, seed: int | None = 0, **encoder_kwargs) -> Path:
    """Write a copy of a MusicGen checkpoint whose text encoder is `encoder` (`model: hf`).

    Args:
        model_name_or_dir: the source checkpoint: a folder with upstream's export files, or a hub id
            in the local cache.
        encoder: hub id or folder of the new text encoder.
        out_dir: folder to write `state_dict.bin` and `compression_state_dict.bin` into.
        pooling, layer, **encoder_kwargs: options of `HFEncoderConditioner` (max_length,
            prompt_template, dtype, finetune, ...).
        attribute: which text condition to swap.
        keep_projection: as in `set_text_encoder`.
        overwrite: replace files already in `out_dir` (never done otherwise).
        seed: seed of a new projection.
    Returns:
        `out_dir`.
    """
    from omegaconf import OmegaConf

    from .models import loaders

    lm_file = loaders.resolve_file(model_name_or_dir, loaders.LM_FILE)
    codec_file = loaders.resolve_file(model_name_or_dir, loaders.COMPRESSION_FILE)
    out = Path(out_dir).expanduser()
    targets = [out / loaders.LM_FILE, out / loaders.COMPRESSION_FILE]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); pass overwrite=True (--overwrite) to replace "
                              "them, or choose another output folder")
    pkg = loaders.load_checkpoint(lm_file)
    resolved = loaders.lm_config(pkg, lm_file, "cpu")
    conditioners = resolved.get("conditioners") or {}
    if attribute not in conditioners:
        raise KeyError(f"{lm_file} has no conditioner {attribute!r}; it has {sorted(conditioners)}")
    old_cfg = conditioners[attribute].get(conditioners[attribute]["model"]) or {}
    encoder_kwargs.setdefault("word_dropout", old_cfg.get("word_dropout", 0.0))
    new = HFEncoderConditioner(_encoder_name(encoder), output_dim=resolved["transformer_lm"]["dim"], device="cpu",
                               pooling=pooling, layer=layer, **encoder_kwargs)
    prefix = f"condition_provider.conditioners.{attribute}."
    state = {k: v for k, v in pkg["best_state"].items() if not k.startswith(prefix)}
    old_proj = {k: v for k, v in pkg["best_state"].items() if k.startswith(prefix + "output_proj.")}
    old_weight = old_proj.get(prefix + "output_proj.weight")
    if _decide_keep(keep_projection, None if old_weight is None else old_weight.shape[1], new):
        new.output_proj.load_state_dict({k[len(prefix + "output_proj."):]: v for k, v in old_proj.items()})
        new.projection_origin = "kept"
    else:
        _new_projection(new, seed)
    new.swapped_projection = new.projection_origin
    # Frozen: output_proj only; finetune=True: the encoder's weights too, as upstream saves them.
    state.update({prefix + k: v.detach().clone() for k, v in new.state_dict().items()})
    cfg = OmegaConf.create(pkg["xp.cfg"])  # the original text: interpolations and other keys untouched
    OmegaConf.set_struct(cfg, False)
    cfg.conditioners[attribute] = conditioner_config(new)
    out.mkdir(parents=True, exist_ok=True)
    exported = {"best_state": state, "xp.cfg": OmegaConf.to_yaml(cfg), "version": pkg.get("version"),
                "exported": True}
    _atomic_write(targets[0], lambda tmp: torch.save(exported, tmp))
    if codec_file.resolve() != targets[1].resolve():
        _atomic_write(targets[1], lambda tmp: shutil.copyfile(codec_file, tmp))
    return out


def cmd_swap(args: argparse.Namespace) -> int:
    keep = {"auto": "auto", "yes": True, "no": False}[args.keep_projection]
    out = swap_checkpoint(args.model, args.encoder, args.output, pooling=args.pooling, layer=args.layer,
                          attribute=args.attribute, keep_projection=keep, overwrite=args.overwrite, seed=args.seed,
                          max_length=args.max_length, prompt_template=args.prompt_template, dtype=args.dtype,
                          finetune=args.finetune)
    from .models import loaders

    cfg = loaders.lm_config(loaders.load_checkpoint(out / loaders.LM_FILE), out / loaders.LM_FILE)
    hf = cfg["conditioners"][args.attribute]["hf"]
    print(f"wrote {out}: {args.attribute!r} conditioned by {hf['name']!r} (pooling {hf['pooling']}, "
          f"layer {'last' if hf['layer'] is None else hf['layer']}), output_proj {hf['swapped_projection']}")
    if hf["swapped_projection"] == "new":
        print("note: the new output_proj is random; align or fine-tune it before expecting music that follows the text")
    return 0


def add_swap_parser(subparsers) -> argparse.ArgumentParser:
    """Register `swap MODEL --encoder NAME_OR_DIR -o OUT_DIR [...]` on the CLI's subparsers."""
    swap = subparsers.add_parser(
        "swap", help="write a copy of a MusicGen checkpoint with another Hugging Face text encoder",
        description="swap MODEL --encoder NAME_OR_DIR -o OUT_DIR: MODEL is a checkpoint folder or a hub id in the "
                    "local Hugging Face cache; the encoder a hub id or a folder (T5, BERT-like, sentence-transformers, "
                    "CLIP/CLAP, GPT-2/Llama/Qwen2...). OUT_DIR then loads with `generate OUT_DIR ...`.")
    swap.add_argument("model")
    swap.add_argument("--encoder", required=True, metavar="NAME_OR_DIR")
    swap.add_argument("-o", "--output", required=True, metavar="OUT_DIR")
    swap.add_argument("--pooling", choices=POOLINGS + ("projected",), help="default: the encoder family's")
    swap.add_argument("--layer", type=int, help="hidden state to use (default: the last)")
    swap.add_argument("--max-length", type=int, help="truncate texts to this many tokens (with a warning)")
    swap.add_argument("--prompt-template", help="format of each text, e.g. 'query: {}'")
    swap.add_argument("--dtype", choices=sorted(DTYPES), help="encoder weights/compute dtype (default float32)")
    swap.add_argument("--attribute", default="description", help="text condition to swap (default: description)")
    swap.add_argument("--keep-projection", choices=("auto", "yes", "no"), default="auto",
                      help="keep output_proj when widths match (auto), insist (yes), or always make a new one (no)")
    swap.add_argument("--finetune", action="store_true", help="mark the encoder trainable (its weights are saved)")
    swap.add_argument("--seed", type=int, default=0, help="seed of a new projection")
    swap.add_argument("--overwrite", action="store_true", help="replace files already in OUT_DIR")
    swap.set_defaults(func=cmd_swap)
    return swap
