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


def _value(text: str):
    """'8' -> 8, '0.1' -> 0.1, 'true' -> True, anything else stays a string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def adapter_spec(kind: str, options: list[str] | None) -> dict:
    """--adapter KIND plus --adapter-option KEY=VALUE ... -> {'kind': KIND, KEY: VALUE, ...}."""
    spec: dict = {"kind": kind}
    for option in options or []:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ValueError(f"--adapter-option expects KEY=VALUE (e.g. hidden=512), got {option!r}")
        spec[key.strip().replace("-", "_")] = _value(value.strip())
    return spec


def _add_training(p: argparse.ArgumentParser, steps: int, lr: float) -> None:
    p.add_argument("model", help="source MusicGen: a checkpoint folder or a hub id in the local Hugging Face cache")
    p.add_argument("-o", "--out", required=True, help="output folder (checkpoint, train_state.pt, log.jsonl, metrics)")
    p.add_argument("--adapter", default="linear", choices=("linear", "mlp", "resampler"),
                   help="adapter between the new encoder and the LM (default linear = a projection)")
    p.add_argument("--adapter-option", action="append", metavar="KEY=VALUE",
                   help="adapter option, repeatable: mlp: hidden, depth, dropout; resampler: width, n_tokens, "
                        "num_heads, depth, dropout")
    p.add_argument("--pooling", default="none", help="student encoder pooling: none, mean, cls, last, max")
    p.add_argument("--layer", type=int, default=None, help="student encoder hidden layer (default: the last)")
    p.add_argument("--attribute", default=None, help="text attribute to train (default: the model's only one)")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch-size", type=int, default=32, help="global batch, split over processes (default 32)")
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=0, help="linear warmup steps, then cosine decay to 10%%")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--holdout", type=float, default=0.1, help="held-out fraction (or count if >= 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=0, help="also evaluate every N steps (default: before/after)")
    p.add_argument("--save-every", type=int, default=100, help="write train_state.pt every N steps")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--cache-dir", default=None, help="cached features/tokens (default OUT/cache)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: each rank its LOCAL_RANK GPU)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace, mode: str, **extra):
    from .train import TrainConfig

    return TrainConfig(
        mode=mode, model=args.model, out=args.out, adapter=adapter_spec(args.adapter, args.adapter_option),
        pooling=args.pooling, layer=args.layer, attribute=args.attribute, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup,
        grad_clip=args.grad_clip, holdout=args.holdout if args.holdout < 1 else int(args.holdout), seed=args.seed,
        eval_every=args.eval_every, save_every=args.save_every, log_every=args.log_every, cache_dir=args.cache_dir,
        device=args.device, resume=args.resume, progress=not args.quiet, **extra)


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
    return _run(_config(args, "align", student=args.student, captions=args.captions, pairs=args.pairs,
                        losses=args.losses, codes=args.codes, code_steps=args.code_steps), args.threads)


def cmd_finetune(args: argparse.Namespace) -> int:
    targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    return _run(_config(args, "finetune", student=args.student, manifest=args.manifest, audio_dir=args.audio_dir,
                        segment_steps=args.segment_steps, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                        lora_targets=targets, train_encoder=args.train_encoder), args.threads)


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
    _add_training(align, steps=1000, lr=1e-3)
    align.add_argument("--student", required=True, help="new encoder: hub id in the local cache, or a folder")
    data = align.add_mutually_exclusive_group(required=True)
    data.add_argument("--captions", help="caption file, one per line (the same text for both encoders)")
    data.add_argument("--pairs", help="parallel texts: TSV 'student<TAB>teacher' or JSONL {student, teacher}")
    align.add_argument("--losses", default="kl", help="kl (next-token KL), xattn (cross-attention outputs), "
                                                      "feature (mean condition); weighted: 'kl=1,feature=0.1'")
    align.add_argument("--codes", default="random", choices=("random", "teacher"),
                       help="code sequences the LM reads: random, or sampled from the teacher "
                            "(slower, in-distribution)")
    align.add_argument("--code-steps", type=int, default=16, help="timesteps per code sequence")
    align.set_defaults(func=cmd_align)

    finetune = subparsers.add_parser(
        "finetune", help="fine-tune the conditioner (and optional LoRA / encoder) with the LM's loss on audio",
        description="Fine-tune on a folder of audio + a JSONL manifest of captions with the LM's cross-entropy "
                    "over the delay pattern. EnCodec tokens are computed once and cached.")
    _add_training(finetune, steps=1000, lr=1e-4)
    finetune.add_argument("--manifest", required=True, help="JSONL: {\"path\": ..., \"description\": ...} per line")
    finetune.add_argument("--audio-dir", default=None, help="base of relative paths (default: the manifest's folder)")
    finetune.add_argument("--student", default=None, help="swap in this encoder first (fresh adapter)")
    finetune.add_argument("--segment-steps", type=int, default=64, help="codec frames per training segment")
    finetune.add_argument("--lora-rank", type=int, default=0, help="LoRA rank on cross-attention (0: none)")
    finetune.add_argument("--lora-alpha", type=float, default=None, help="LoRA scale numerator (default: rank)")
    finetune.add_argument("--lora-targets", default="q,v", help="comma-separated of q, k, v, out")
    finetune.add_argument("--train-encoder", action="store_true", help="train the text encoder too")
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
    comp.add_argument("--threads", type=int, default=0)
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
