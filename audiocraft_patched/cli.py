"""Command line: `audiocraft-patched generate` and `audiocraft-patched inspect`.

    audiocraft-patched generate "calm piano" -o out.wav            # the embedded default model
    audiocraft-patched generate ./musicgen-small "calm piano" -o out.wav --duration 8
    audiocraft-patched inspect facebook/musicgen-small             # from the local HF cache
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .utils.threads import thread_count

BUILTIN = ("default", "debug")


def _looks_like_model(arg: str) -> bool:
    """Whether the first positional of `generate` names a model rather than a prompt."""
    if arg in BUILTIN or Path(arg).expanduser().is_dir():
        return True
    from .models.loaders import LM_FILE, CheckpointError, resolve_file

    if arg.count("/") != 1 or " " in arg:
        return False
    try:
        resolve_file(arg, LM_FILE)
        return True
    except CheckpointError:
        return False


def _load(name: str, device: str, dtype: str | None = None):
    from .models import load_generator  # MusicGen, AudioGen or MAGNeT, as the checkpoint's config says

    if name == "default":
        from .default_model import UNTRAINED_NOTE

        print(f"note: {UNTRAINED_NOTE}", file=sys.stderr)
    return load_generator(name, device=device, dtype=dtype)


def cmd_generate(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from .data.audio import audio_write
    from .data.audio_utils import convert_audio

    words = list(args.words)
    images, clips = list(args.image or []), list(args.audio_prompt or [])
    melodies = _read_melodies(args)
    model_name = args.model
    if model_name is None:
        # With --image / --audio-prompt / --melody a lone positional may be the model: no text is needed then.
        needed = 1 if images or clips or melodies else 2
        model_name = words.pop(0) if len(words) >= needed and _looks_like_model(words[0]) else "default"
    if not words and not images and not clips and not melodies:
        raise ValueError("give at least one prompt, e.g. generate \"calm piano\" -o out.wav (or --image / "
                         "--audio-prompt)")
    count = max(len(words), len(images), len(clips), len(melodies))
    for flag, values in (("prompts", words), ("--image", images), ("--audio-prompt", clips), ("--melody", melodies)):
        if len(values) not in (0, 1, count):
            raise ValueError(f"{len(values)} {flag} for {count} samples: give one (shared by all) or one per sample")
    inputs = {"descriptions": words * (count // len(words)) if words else None}
    if images:
        inputs["images"] = images * (count // len(images))
    if clips:
        inputs["audio_prompts"] = clips * (count // len(clips))
    if args.duration <= 0:
        raise ValueError(f"--duration must be > 0 seconds, got {args.duration}")
    torch.set_num_threads(args.threads) if args.threads else None
    model = _load(model_name, args.device, args.dtype)
    model.set_generation_params(**_generation_params(model, args))
    out = Path(args.output)
    stems = [out.with_suffix("")] if count == 1 else [out.with_name(f"{out.stem}_{i}") for i in range(count)]
    for stem in stems:  # refuse before spending minutes generating
        target = stem.with_suffix(".wav")
        if target.exists() and not args.overwrite:
            raise FileExistsError(f"{target} exists; pass --overwrite to replace it or choose another -o")
    bar = tqdm(total=None, unit="step", desc="generating", disable=args.quiet)

    def progress(done: int, total: int):
        bar.total = total
        bar.n = done
        bar.refresh()

    model.set_custom_progress_callback(progress)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    if melodies:
        wavs = [convert_audio(w, rate, model.sample_rate, model.audio_channels) for w, rate in melodies]
        wav, tokens = model.generate_with_chroma(
            inputs["descriptions"] or [None] * count, wavs * (count // len(wavs)), model.sample_rate, progress=True,
            return_tokens=True, melody_stems="full_mix" if args.melody_full_mix else None)
    elif images or clips:
        wav, tokens = model.generate(progress=True, return_tokens=True, **inputs)
    else:
        wav, tokens = model.generate(words, progress=True, return_tokens=True)
    bar.close()
    total = time.perf_counter() - start
    steps = sum(model.generation_params.get("decoding_steps") or []) or tokens.shape[-1] + model.lm.num_codebooks - 1
    t = model.timings
    per_encoder = ", ".join(f"{key.split('.', 1)[1]} {_encoder_name(model, key.split('.', 1)[1])} {v * 1e3:.1f} ms"
                            for key, v in t.items() if key.startswith("conditioning."))
    print(f"timing: conditioning {t.get('conditioning', 0) * 1e3:.1f} ms ({per_encoder}) | LM {t.get('lm', 0):.2f} s "
          f"({t.get('lm', 0) / max(steps, 1) * 1e3:.1f} ms/step) | decode {t.get('decode', 0):.2f} s | "
          f"total {total:.2f} s")
    for stem, audio in zip(stems, wav):
        # Loudness normalisation (as upstream's demos) needs 400 ms of audio to measure.
        strategy = "loudness" if audio.shape[-1] >= 0.4 * model.sample_rate else "peak"
        path = audio_write(stem, audio.cpu(), model.sample_rate, strategy=strategy, loudness_compressor=True,
                           overwrite=args.overwrite)
        print(f"wrote {path} ({audio.shape[-1] / model.sample_rate:.2f} s, {model.sample_rate} Hz, "
              f"{audio.shape[0]} channel{'s' if audio.shape[0] > 1 else ''})")
    return 0


def _generation_params(model, args: argparse.Namespace) -> dict:
    """The sampling flags as `model.set_generation_params` takes them (MAGNeT has its own set)."""
    from .models import AudioGen, MAGNeT

    defaults = build_parser().parse_args(["generate"])  # to tell the flags given from the defaults
    stride = args.extend_stride
    if not isinstance(model, MAGNeT):
        if isinstance(model, AudioGen) and stride == defaults.extend_stride:
            stride = None  # AudioGen's own (2 s)
        return dict(duration=args.duration, top_k=args.top_k, top_p=args.top_p, temperature=args.temperature,
                    cfg_coef=args.cfg_coef, use_sampling=not args.greedy, extend_stride=stride)
    if stride != defaults.extend_stride:
        raise ValueError("--extend-stride does not apply to MAGNeT: it generates its segment "
                         f"({model.max_duration:g} s) at once")
    # MAGNeT keeps its own defaults (its whole segment, top_p 0.9, temperature 3 annealed, CFG 10 -> 1);
    # only the flags given change them, --cfg-coef being where the annealed guidance starts.
    names = {"duration": "duration", "top_k": "top_k", "top_p": "top_p", "temperature": "temperature",
             "max_cfg_coef": "cfg_coef"}
    params = {key: getattr(args, flag) for key, flag in names.items() if getattr(args, flag) != getattr(defaults, flag)}
    if "top_k" in params and "top_p" not in params:
        params["top_p"] = 0.0  # else MAGNeT's top_p 0.9 would win over the --top-k asked for
    return {"use_sampling": not args.greedy, **params}


def _read_melodies(args: argparse.Namespace) -> list:
    """The `--melody` WAVs as (wav [C, T], sample rate), read before the model loads (errors come first)."""
    from .data.audio import audio_read

    paths = list(args.melody or [])
    if args.melody_full_mix and not paths:
        raise ValueError("--melody-full-mix applies to --melody: give a melody WAV too")
    if paths and (args.image or args.audio_prompt):
        raise ValueError("--melody cannot be combined with --image or --audio-prompt (no model has both conditioners)")
    melodies = []
    for path in paths:
        if not Path(path).expanduser().is_file():
            raise FileNotFoundError(f"--melody: no such audio file: {path!r}")
        wav, rate = audio_read(Path(path).expanduser())
        if wav.shape[-1] == 0:
            raise ValueError(f"--melody: {path} holds no audio")
        melodies.append((wav, rate))
    return melodies


def _encoder_name(model, attribute: str) -> str:
    return f"[{model.lm.condition_provider.conditioners[attribute].describe()['source']}]"


def describe(model) -> list[str]:
    """Human-readable summary of a loaded MusicGen."""
    lm = model.lm
    from .models.generators import describe_generator

    lines = [f"model: {model.name}", f"generator: {describe_generator(model)}"]
    for name, cond in lm.condition_provider.conditioners.items():
        about = cond.describe()  # the projection line says where it comes from: after a swap, maybe random
        lines += [f"conditioner {name!r}: {about['summary']}", f"  output_proj: {about['projection']}"]
    fuse = {k: v for k, v in lm.fuser.fuse2cond.items() if v}
    lines.append(f"fuser: {fuse}" + (" + cross-attention positions" if lm.fuser.cross_attention_pos_emb else ""))
    pattern = lm.pattern_provider
    lines.append(f"codebooks: {lm.num_codebooks} x card {lm.card}, pattern {type(pattern).__name__}"
                 + (f" delays {pattern.delays}" if hasattr(pattern, "delays") else ""))
    layers = lm.transformer.layers
    lines.append(f"LM: dim {lm.dim}, {len(layers)} layers, {layers[0].self_attn.num_heads} heads, "
                 f"{sum(p.numel() for p in lm.parameters()) / 1e6:.2f}M params (conditioner encoders excluded "
                 f"unless fine-tuned), cfg_coef {lm.cfg_coef}")
    lines.append(f"matmul forms: {lm.transformer.matmul_forms.describe()}")
    codec = model.compression_model
    lines.append(f"codec: {type(codec).__name__}, {model.sample_rate} Hz, {model.audio_channels} channel(s), "
                 f"{model.frame_rate:g} frames/s, {sum(p.numel() for p in codec.parameters()) / 1e6:.2f}M params")
    lines.append(f"max_duration: {model.max_duration:g} s")
    return lines


def cmd_inspect(args: argparse.Namespace) -> int:
    print("\n".join(describe(_load(args.model, args.device))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiocraft-patched", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="text to music",
                         description="generate [MODEL] PROMPT [PROMPT ...]: MODEL is a checkpoint folder, a hub id in "
                                     "the local Hugging Face cache, 'default' (embedded) or 'debug'; omitted: default")
    gen.add_argument("words", nargs="*", metavar="[MODEL] PROMPT")
    gen.add_argument("-m", "--model", help="model (instead of the first positional)")
    gen.add_argument("-o", "--output", default="out.wav", help="output WAV (several prompts: out_0.wav, ...)")
    gen.add_argument("--image", action="append", metavar="PATH",
                     help="condition on this image (models with an image conditioner); repeat for several samples")
    gen.add_argument("--audio-prompt", action="append", metavar="PATH",
                     help="condition on this reference WAV's style (models with a CLAP audio conditioner; not "
                          "continued); repeat for several samples")
    gen.add_argument("--melody", action="append", metavar="PATH",
                     help="follow the melody of this WAV (melody checkpoints); repeat for several samples")
    gen.add_argument("--melody-full-mix", action="store_true",
                     help="take the melody's chroma from the whole mix instead of removing drums and bass with "
                          "demucs (needed when demucs or its weights are not on this machine; an approximation)")
    gen.add_argument("--duration", type=float, default=5.0, help="seconds (default 5)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--top-k", type=int, default=250)
    gen.add_argument("--top-p", type=float, default=0.0)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--cfg-coef", type=float, default=3.0)
    gen.add_argument("--greedy", action="store_true", help="argmax instead of sampling")
    gen.add_argument("--extend-stride", type=float, default=18, help="seconds between windows past max_duration")
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None,
                     help="LM + text encoder precision (default fp32; bf16 is ~2x faster on recent CPUs)")
    gen.add_argument("--threads", type=thread_count, default=0,
                     help="torch threads, 1 to the CPU count (0: torch's default)")
    gen.add_argument("--overwrite", action="store_true", help="replace existing output files")
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=cmd_generate)

    ins = sub.add_parser("inspect", help="describe a model: conditioners, encoder width, codebooks, sizes")
    ins.add_argument("model", nargs="?", default="default")
    ins.add_argument("--device", default="cpu")
    ins.set_defaults(func=cmd_inspect)

    # The other verbs live beside what they drive: swap.py, align/, patching/.
    from .align.cli import add_align_parsers
    from .app import add_app_parser
    from .patching.rebase import add_rebase_parser
    from .swap import add_swap_parser

    add_swap_parser(sub)
    add_align_parsers(sub)
    add_rebase_parser(sub)
    add_app_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .models.loaders import CheckpointError
    from .modules.conditioners.chroma import StemSeparationUnavailable

    try:
        return args.func(args)
    except (CheckpointError, OSError, ValueError, NotImplementedError, StemSeparationUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
