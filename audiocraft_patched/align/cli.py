"""Command line verbs `align`, `finetune` and `compare-encoders` (registered by `add_align_parsers`).

    audiocraft-patched align ./musicgen-small --student ./minilm --captions captions.txt \\
        --adapter resampler -o ./musicgen-minilm
    torchrun --nproc_per_node 2 -m audiocraft_patched.cli align ...        # same command, 2 processes
    audiocraft-patched finetune ./musicgen-minilm --manifest data.jsonl --lora-rank 8 -o ./musicgen-ft
    audiocraft-patched compare-encoders ./musicgen-small ./minilm ./musicgen-minilm --captions held.txt

No upstream counterpart (upstream trains through dora / hydra solvers).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..utils.threads import thread_count
from .config import ALIGN, FINETUNE, adapter_spec, add_flags, from_args  # noqa: F401  (adapter_spec: API)


def _run(cfg, threads: int) -> int:
    import torch

    from .train import train

    if threads:
        torch.set_num_threads(threads)
    result = train(cfg)
    if "after" in result:  # rank 0
        names = [k for k in result["after"] if k != "loss"] or ["loss"]
        for name in names:
            print(f"held-out {name}: {result['before'][name]:.4f} -> {result['after'][name]:.4f}")
        print(f"wrote {cfg.out} (load it with MusicGen.get_pretrained({cfg.out!r}) or "
              f"`audiocraft-patched generate {cfg.out} \"...\"`)")
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    return _run(from_args(args, ALIGN), args.threads)


def cmd_finetune(args: argparse.Namespace) -> int:
    return _run(from_args(args, FINETUNE), args.threads)


def cmd_compare(args: argparse.Namespace) -> int:
    import torch

    from .data import read_captions
    from .metrics import compare, format_table, load_side, png_available, write_json, write_png

    if args.png and not png_available():  # say it before minutes of work, not after
        raise ValueError("--png needs matplotlib, which is not installed: `pip install matplotlib`, or use --json")
    existing = [path for path in (args.json, args.png) if path and Path(path).exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace, or choose "
                              "another path")
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = read_captions(args.captions)[:args.limit or None]
    teacher = load_side(args.teacher, args.device, seed=args.seed, pooling=args.pooling)
    students = [load_side(s, args.device, teacher=teacher, seed=args.seed, pooling=args.pooling)
                for s in args.students]
    result = compare(teacher, students, texts, fit_fraction=args.fit_fraction, code_steps=args.code_steps,
                     seed=args.seed, cfg_coef=args.cfg_coef)
    print(format_table(result))
    if args.json:
        write_json(result, args.json, overwrite=args.overwrite)
        print(f"wrote {args.json}")
    if args.png:
        write_png(result, args.png, overwrite=args.overwrite)
        print(f"wrote {args.png}")
    return 0


def add_align_parsers(subparsers) -> None:
    """Register `align`, `finetune` and `compare-encoders` on an argparse subparsers object."""
    align = subparsers.add_parser(
        "align", help="train an adapter so a new encoder conditions the frozen LM like the old one (no audio)",
        description="Align a new text encoder to a MusicGen's own conditioner (the teacher) with the LM frozen. "
                    "Writes a checkpoint (model: hf_adapter) that loads like any other.")
    add_flags(align, ALIGN)  # every training setting, from TrainConfig
    align.add_argument("--threads", type=thread_count, default=0,
                       help="torch threads per process, 1 to the CPU count (0: torch's default)")
    align.set_defaults(func=cmd_align)

    finetune = subparsers.add_parser(
        "finetune", help="fine-tune the conditioner (and optional LoRA / encoder) with the LM's loss on audio",
        description="Fine-tune on a folder of audio + a JSONL manifest of captions with the LM's cross-entropy "
                    "over the delay pattern. EnCodec tokens are computed once and cached.")
    add_flags(finetune, FINETUNE)
    finetune.add_argument("--threads", type=thread_count, default=0,
                          help="torch threads per process, 1 to the CPU count (0: torch's default)")
    finetune.set_defaults(func=cmd_finetune)

    comp = subparsers.add_parser(
        "compare-encoders", help="CKA, mapped cosine, retrieval@k, LM next-token KL / top-1 vs a teacher",
        description="Compare students with a teacher on captions. Each is a MusicGen checkpoint (its conditioner) "
                    "or a bare encoder (raw hidden states; with a MusicGen teacher, plugged in with an untrained "
                    "projection for the LM metrics).")
    comp.add_argument("teacher", help="MusicGen checkpoint (or encoder) to compare against")
    comp.add_argument("students", nargs="+", help="MusicGen checkpoints and/or encoders")
    comp.add_argument("--captions", required=True, help="caption file, one per line")
    comp.add_argument("--limit", type=int, default=0, help="use the first N captions (0: all)")
    comp.add_argument("--fit-fraction", type=float, default=0.5, help="captions used to fit the least-squares map")
    comp.add_argument("--code-steps", type=int, default=16)
    comp.add_argument("--cfg-coef", type=float, default=None, help="CFG coefficient (default: the model's)")
    comp.add_argument("--seed", type=int, default=0)
    comp.add_argument("--pooling", default="none", help="pooling of bare encoders (default none: token states)")
    comp.add_argument("--json", default=None, help="write the results as JSON")
    comp.add_argument("--png", default=None, help="write a bar plot (needs matplotlib)")
    comp.add_argument("--overwrite", action="store_true", help="replace existing --json / --png files")
    comp.add_argument("--device", default="cpu")
    comp.add_argument("--threads", type=thread_count, default=0)
    comp.set_defaults(func=cmd_compare)


def main(argv: list[str] | None = None) -> int:
    """Run one of the three verbs alone (`python -m audiocraft_patched.align.cli align ...`)."""
    parser = argparse.ArgumentParser(prog="audiocraft-patched", description=__doc__.split("\n")[0])
    add_align_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
