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
from pathlib import Path

from .modules.conditioners.encoder_swap import swapped_conditioner
from .modules.conditioners.hf_encoder import DTYPES, HFEncoderConditioner
from .modules.conditioners.hf_family import POOLINGS
from .utils.export import copy_file, save_checkpoint

def set_text_encoder(model, name_or_dir: str | Path, attribute: str = "description", **kwargs) -> HFEncoderConditioner:
    """Replace the text conditioner `attribute` of a loaded MusicGen (see `MusicGen.set_text_encoder`)."""
    return model.set_text_encoder(name_or_dir, attribute=attribute, **kwargs)


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
    from .models import loaders
    from .models.musicgen import checkpoint_location

    model_name_or_dir = checkpoint_location(str(model_name_or_dir))  # 'default' as generate reads it
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
    prefix = f"condition_provider.conditioners.{attribute}."
    state = {k: v for k, v in pkg["best_state"].items() if not k.startswith(prefix)}
    old_proj = {k[len(prefix + "output_proj."):]: v for k, v in pkg["best_state"].items()
                if k.startswith(prefix + "output_proj.")}
    new = swapped_conditioner(encoder, resolved["transformer_lm"]["dim"], old_proj or None, keep_projection, seed,
                              device="cpu", pooling=pooling, layer=layer, **encoder_kwargs)
    # Frozen: output_proj only; finetune=True: the encoder's weights too, as upstream saves them.
    state.update({prefix + k: v for k, v in new.state_dict().items()})
    # The original config text: interpolations and other keys untouched, the new conditioner from its config().
    save_checkpoint(targets[0], state, pkg["xp.cfg"], {attribute: new}, version=pkg.get("version"),
                    overwrite=overwrite)
    copy_file(codec_file, targets[1], overwrite=overwrite)
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
        description="swap MODEL --encoder NAME_OR_DIR -o OUT_DIR: MODEL is a checkpoint folder, a hub id in the "
                    "local Hugging Face cache or 'default' (the embedded model); the encoder a hub id or a folder "
                    "(T5, BERT-like, sentence-transformers, CLIP/CLAP, GPT-2/Llama/Qwen2...). OUT_DIR then loads "
                    "with `generate OUT_DIR ...`.")
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
