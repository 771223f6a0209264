"""`TrainConfig`: the settings of `align` and `finetune`, written once.

No upstream counterpart (upstream configures its solvers with hydra). Each field says, in its
metadata, which verbs take it on the command line, its help, and whether a resumed run must
keep it; the flags (`add_flags`), the config built from them (`from_args`) and the settings a
resume checks (`RESUME_KEYS`) all come from the one dataclass, as nanoGPT's config is one place.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ALIGN, FINETUNE = "align", "finetune"
BOTH = (ALIGN, FINETUNE)


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


def setting(default: Any = dataclasses.MISSING, *, help: str | dict[str, str] = "", verbs: tuple[str, ...] = BOTH,
            resume: bool = False, required: tuple[str, ...] = (), defaults: dict[str, Any] | None = None,
            exclusive: str | None = None, flags: list[tuple[tuple[str, ...], dict]] | None = None,
            from_args: Callable[[argparse.Namespace], Any] | None = None, factory: Callable[[], Any] | None = None,
            **argparse_kwargs) -> Any:
    """A `TrainConfig` field and how the command line gives it.

    Args:
        default / factory: the config's default.
        help: the flag's help, or {verb: help}.
        verbs: the verbs that take it as a flag (none: set by the verb itself).
        resume: a run resumed with `--resume` must have the same value.
        required: verbs for which the flag is required.
        defaults: {verb: default} where the verb's flag default differs from the config's.
        exclusive: name of a required group of mutually exclusive flags.
        flags: [(names, argparse kwargs)] instead of one `--name` flag; then `from_args` reads them.
        from_args: the value from the parsed arguments (default: the flag's value as is).
        **argparse_kwargs: for `add_argument` (type, choices, metavar, ...).
    """
    metadata = {"help": help, "verbs": verbs, "resume": resume, "required": required, "defaults": defaults or {},
                "exclusive": exclusive, "flags": flags, "from_args": from_args, "argparse": argparse_kwargs}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    mode: str = setting(verbs=(), resume=True)  # 'align' (no audio: match the teacher) or 'finetune' (the LM's loss)
    model: str = setting(help="source MusicGen: a checkpoint folder or a hub id in the local Hugging Face cache",
                         resume=True, flags=[(("model",), {})])
    out: str = setting(help="output folder (checkpoint, train_state.pt, log.jsonl, metrics)",
                       flags=[(("-o", "--out"), {"required": True})])
    student: str | None = setting(None, resume=True, required=(ALIGN,), help={
        ALIGN: "new encoder: hub id in the local cache, or a folder",
        FINETUNE: "swap in this encoder first (fresh adapter)"})
    adapter: dict = setting(
        factory=lambda: {"kind": "linear"}, resume=True,
        flags=[(("--adapter",), {"default": "linear", "choices": ("linear", "mlp", "resampler"),
                                 "help": "adapter between the new encoder and the LM (default linear = a projection)"}),
               (("--adapter-option",), {"action": "append", "metavar": "KEY=VALUE",
                                        "help": "adapter option, repeatable: mlp: hidden, depth, dropout; resampler: "
                                                "width, n_tokens, num_heads, depth, dropout"})],
        from_args=lambda args: adapter_spec(args.adapter, args.adapter_option))
    pooling: str = setting("none", resume=True, help="student encoder pooling: none, mean, cls, last, max")
    layer: int | None = setting(None, resume=True, type=int, help="student encoder hidden layer (default: the last)")
    attribute: str | None = setting(None, resume=True, help="text attribute to train (default: the model's only one)")
    captions: str | None = setting(None, verbs=(ALIGN,), resume=True, exclusive="data",
                                   help="caption file, one per line (the same text for both encoders)")
    pairs: str | None = setting(None, verbs=(ALIGN,), resume=True, exclusive="data",
                                help="parallel texts: TSV 'student<TAB>teacher' or JSONL {student, teacher}")
    losses: str | dict = setting("kl", verbs=(ALIGN,), resume=True,
                                 help="kl (next-token KL), xattn (cross-attention outputs), feature (mean condition); "
                                      "weighted: 'kl=1,feature=0.1'")
    codes: str = setting("random", verbs=(ALIGN,), resume=True, choices=("random", "teacher"),
                         help="code sequences the LM reads: random, or sampled from the teacher (slower, "
                              "in-distribution)")
    code_steps: int = setting(16, verbs=(ALIGN,), resume=True, type=int, help="timesteps per code sequence")
    manifest: str | None = setting(None, verbs=(FINETUNE,), resume=True, required=(FINETUNE,),
                                   help="JSONL: {\"path\": ..., \"description\": ...} per line")
    audio_dir: str | None = setting(None, verbs=(FINETUNE,),
                                    help="base of relative paths (default: the manifest's folder)")
    segment_steps: int = setting(64, verbs=(FINETUNE,), resume=True, type=int,
                                 help="codec frames per training segment")
    lora_rank: int = setting(0, verbs=(FINETUNE,), resume=True, type=int,
                             help="LoRA rank on cross-attention (0: none)")
    lora_alpha: float | None = setting(None, verbs=(FINETUNE,), resume=True, type=float,
                                       help="LoRA scale numerator (default: rank)")
    lora_targets: tuple[str, ...] = setting(
        ("q", "v"), verbs=(FINETUNE,), resume=True,
        flags=[(("--lora-targets",), {"default": "q,v", "help": "comma-separated of q, k, v, out"})],
        from_args=lambda args: tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()))
    train_encoder: bool = setting(False, verbs=(FINETUNE,), resume=True, help="train the text encoder too")
    steps: int = setting(1000, type=int)
    batch_size: int = setting(32, resume=True, type=int, help="global batch, split over processes (default 32)")
    lr: float = setting(1e-3, type=float, defaults={FINETUNE: 1e-4})
    weight_decay: float = setting(0.0, type=float)
    warmup: int = setting(0, type=int, help="linear warmup steps, then cosine decay to 10%% of lr at `steps`")
    grad_clip: float = setting(1.0, type=float, help="max gradient norm (0: off)")
    holdout: float = setting(0.1, resume=True, type=float, help="held-out fraction (or count if >= 1)",
                             from_args=lambda args: args.holdout if args.holdout < 1 else int(args.holdout))
    seed: int = setting(0, resume=True, type=int)
    eval_every: int = setting(0, type=int, help="also evaluate every N steps (default: before/after)")
    save_every: int = setting(100, type=int, help="write train_state.pt every N steps")
    log_every: int = setting(10, type=int)
    cache_dir: str | None = setting(None, help="cached features/tokens (default OUT/cache)")
    device: str = setting("cpu", help="cpu or cuda (under torchrun: each rank its LOCAL_RANK GPU)")
    resume: bool = setting(False, help="continue from OUT/train_state.pt")
    overwrite: bool = setting(False, help="start over in an OUT that holds a run: its checkpoint, train state and "
                                          "log are replaced (never allowed over the source checkpoint)")
    progress: bool = setting(True, flags=[(("-q", "--quiet"), {"action": "store_true", "help": "no progress bar"})],
                             from_args=lambda args: not args.quiet)

    def __post_init__(self):
        if self.mode not in BOTH:
            raise ValueError(f"mode must be 'align' or 'finetune', got {self.mode!r}")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"need steps >= 1, batch_size >= 1, lr > 0; got steps={self.steps}, "
                             f"batch_size={self.batch_size}, lr={self.lr}")
        for name in ("save_every", "log_every"):  # intervals: 0 would divide by zero mid-run
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 step (--{name.replace('_', '-')}), got {getattr(self, name)}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0 (0: evaluate only before and after), got {self.eval_every}")
        if self.cache_dir is None:
            self.cache_dir = str(Path(self.out) / "cache")
        self.lora_targets = tuple(self.lora_targets)


# Settings a resumed run must share with the run that wrote the state (the others may change, e.g. more --steps).
RESUME_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["resume"])


def _flags(f: dataclasses.Field, verb: str) -> list[tuple[tuple[str, ...], dict]]:
    meta = f.metadata
    text = (meta["help"][verb] if isinstance(meta["help"], dict) else meta["help"]) or None
    if meta["flags"] is not None:
        return [(names, {"help": text, **kwargs}) for names, kwargs in meta["flags"]]
    kwargs = {**meta["argparse"], "help": text}
    if verb in meta["required"]:
        kwargs["required"] = True
    elif isinstance(f.default, bool):
        kwargs["action"] = "store_true"
    elif f.default is not dataclasses.MISSING:
        kwargs["default"] = meta["defaults"].get(verb, f.default)
    return [((f"--{f.name.replace('_', '-')}",), kwargs)]


def add_flags(parser: argparse.ArgumentParser, verb: str) -> None:
    """Add the flags of every `TrainConfig` setting that `verb` ('align' or 'finetune') takes."""
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        if verb not in f.metadata["verbs"]:
            continue
        target = parser
        if f.metadata["exclusive"]:
            name = f.metadata["exclusive"]
            if name not in groups:
                groups[name] = parser.add_mutually_exclusive_group(required=True)
            target = groups[name]
        for names, kwargs in _flags(f, verb):
            target.add_argument(*names, **kwargs)


def from_args(args: argparse.Namespace, verb: str) -> TrainConfig:
    """The `TrainConfig` of parsed flags (from a parser `add_flags(parser, verb)` filled)."""
    values: dict[str, Any] = {"mode": verb}
    for f in dataclasses.fields(TrainConfig):
        if verb in f.metadata["verbs"]:
            read = f.metadata["from_args"]
            values[f.name] = read(args) if read is not None else getattr(args, f.name)
    return TrainConfig(**values)
