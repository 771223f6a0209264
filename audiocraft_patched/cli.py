"""audiocraft-patched: generate, inspect, swap, align, finetune, compare-encoders, rebase, app (VERB --help).

    audiocraft-patched generate "calm piano" -o out.wav            # the embedded default model
    audiocraft-patched generate ./musicgen-small "calm piano" -o out.wav --duration 8
    audiocraft-patched inspect facebook/musicgen-small             # from the local HF cache

Which first positional of `generate` is a model (the rule, also in `generate --help`): a built-in
name ('default', 'default-zh', 'debug'), or a word without spaces that names an existing path,
starts with '.' or '~', or contains '/' (a folder or a hub id). Such a word must then resolve to a
model, or `generate` stops with an error naming it; anything else is a prompt. To use such a
word as a prompt, name the model first: `generate default "rock/pop"`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from .utils.threads import thread_count

BUILTIN = ("default", "default-zh", "debug")


# Said when the embedded models load (not with -q): what they are, in one line.
EMBEDDED_NOTE = ("{name!r} is a tiny model trained only on synthetic flute/clarinet/trumpet clips, not on real music "
                 "(README: 'About the embedded default')")
# Suffixes of audio formats that are not written here: -o with one of them is refused, not renamed.
OTHER_AUDIO = (".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".wma")


def model_reference(arg: str) -> str | None:
    """Why the first positional of `generate` reads as a model, or None when it is a prompt (the module's rule)."""
    if arg in BUILTIN:
        return "it is a built-in model name"
    if not arg or any(c.isspace() for c in arg):
        return None
    if os.path.lexists(Path(arg).expanduser()):
        return "it names an existing path"
    if arg.startswith((".", "~")):
        return "it starts with '.' or '~' (a path)"
    if "/" in arg:
        return "it contains '/' (a folder or a hub id)"
    return None


def _check_model(name: str, why: str) -> None:
    """Resolve the model read from the first positional now, before anything loads, or say what happened."""
    from .models.loaders import LM_FILE, CheckpointError, resolve_file
    from .models.musicgen import checkpoint_location

    if name in BUILTIN:
        return
    try:
        resolve_file(checkpoint_location(name), LM_FILE)
    except CheckpointError as exc:
        raise CheckpointError(f"model {name!r} not found: {exc} (the first argument is read as a model because {why}; "
                              f"to use it as a prompt, name the model first: generate default {name!r})") from None


def _load(name: str, device: str, dtype: str | None = None, quiet: bool = False):
    from .models import load_generator  # MusicGen, AudioGen or MAGNeT, as the checkpoint's config says

    if name in ("default", "default-zh") and not quiet:
        print(f"note: {EMBEDDED_NOTE.format(name=name)}", file=sys.stderr)
    return load_generator(name, device=device, dtype=dtype)


def output_stems(output: str, count: int) -> list[Path] | None:
    """Where `-o` puts `count` clips: their paths without '.wav' (None: discard them, for -o /dev/null).

    A folder (existing, or written with a trailing '/') receives out.wav (out_0.wav, ... for several);
    a file name gets '.wav' unless it has it (several clips: NAME_0.wav, ...); other audio formats
    are refused rather than silently written as WAV.
    """
    if output == os.devnull:
        return None
    path = Path(output).expanduser()
    if output.endswith(("/", os.sep)) or path.is_dir():
        folder, name = path, "out"
    elif os.path.lexists(path) and not path.is_file():
        raise ValueError(f"-o {output}: exists and is not a regular file or a folder; give a WAV path or a folder")
    elif path.suffix.lower() in OTHER_AUDIO:
        raise ValueError(f"-o {output}: only WAV is written (no encoder for {path.suffix} here); use -o "
                         f"{path.with_suffix('.wav')} and convert it, e.g. ffmpeg -i {path.with_suffix('.wav')} {path}")
    else:
        folder, name = path.parent, path.name[:-4] if path.name.lower().endswith(".wav") else path.name
    if count == 1:
        return [folder / name]
    return [folder / f"{name}_{i}" for i in range(count)]


class GenerationProgress:
    """Progress on stderr: a tqdm bar on a terminal; in a log (not a TTY), one line per quarter of each window."""

    def __init__(self, quiet: bool):
        from tqdm import tqdm

        self.quiet, self.tty = quiet, sys.stderr.isatty()
        self.bar = tqdm(total=None, unit="step", desc="generating") if self.tty and not quiet else None
        self.window, self.base, self.last, self.next = 1, 0, 0, 0.25

    def __call__(self, done: int, total: int) -> None:
        if done <= self.last:  # steps count on from the previous window's: a new window began
            self.window, self.base, self.next = self.window + 1, done - 1, 0.25
        self.last = done
        steps = done - self.base
        where = f" (window {self.window})" if self.window > 1 else ""
        if self.bar is not None:
            self.bar.set_description(f"generating{where}", refresh=False)
            self.bar.total, self.bar.n = total, steps
            self.bar.refresh()
        elif not self.quiet and steps >= self.next * total:
            print(f"generating{where}: {steps}/{total} steps ({100 * steps // total}%)", file=sys.stderr, flush=True)
            while self.next * total <= steps:
                self.next += 0.25

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_generate(args: argparse.Namespace) -> int:
    if args.output == "-":  # stdout carries the WAV: every message goes to stderr
        sink = sys.stdout.buffer
        with contextlib.redirect_stdout(sys.stderr):
            return _cmd_generate(args, sink)
    return _cmd_generate(args, None)


def _cmd_generate(args: argparse.Namespace, sink) -> int:
    import torch

    from .data.audio import audio_write
    from .data.audio_utils import convert_audio
    from .models.devices import check_device

    words = list(args.words)
    images, clips = list(args.image or []), list(args.audio_prompt or [])
    melodies = _read_melodies(args)
    model_name = args.model
    why = model_reference(words[0]) if model_name is None and words else None
    if why:  # the module's rule: this word is a model, and must be one
        model_name = words.pop(0)
        _check_model(model_name, why)
    model_name = model_name or "default"
    if not words and not images and not clips and not melodies:
        raise ValueError("give at least one prompt, e.g. generate \"calm piano\" -o out.wav (or --image / "
                         "--audio-prompt)")
    count = max(len(words), len(images), len(clips), len(melodies))
    for flag, values in (("prompts", words), ("--image", images), ("--audio-prompt", clips), ("--melody", melodies)):
        if len(values) not in (0, 1, count):
            raise ValueError(f"{len(values)} {flag} for {count} samples: give one (shared by all) or one per sample")
    negatives = list(args.negative or [])
    if len(negatives) not in (0, 1, count):
        raise ValueError(f"{len(negatives)} --negative for {count} samples: give one (shared by all) or one per sample")
    extra = {"negative_prompts": negatives * (count // len(negatives))} if negatives else {}
    inputs = {"descriptions": words * (count // len(words)) if words else None}
    if images:
        inputs["images"] = images * (count // len(images))
    if clips:
        inputs["audio_prompts"] = clips * (count // len(clips))
    if args.duration <= 0:
        raise ValueError(f"--duration must be > 0 seconds, got {args.duration}")
    stems = output_stems(args.output, count) if sink is None else None
    for stem in stems or []:  # refuse before spending minutes generating
        target = stem.with_name(stem.name + ".wav")
        if target.exists() and not args.overwrite:
            raise FileExistsError(f"{target} exists; pass --overwrite to replace it or choose another -o")
    check_device(args.device)
    torch.set_num_threads(args.threads) if args.threads else None
    model = _load(model_name, args.device, args.dtype, args.quiet)
    if args.quantize:  # the LM's transformer (modules/weight_quant.py)
        model.quantize(args.quantize)
    if args.compile:
        model.compile_step()  # warns and stays eager without a C++ compiler
    model.set_generation_params(**_generation_params(model, args))
    progress = GenerationProgress(args.quiet)
    model.set_custom_progress_callback(progress)
    seed = args.seed
    if seed is None:  # drawn, and said, so that any result can be made again
        seed = int.from_bytes(os.urandom(4), "little") % 2**31
        print(f"seed: {seed} (drawn; pass --seed {seed} to reproduce)")
    torch.manual_seed(seed)
    if args.stream or sink is not None:
        return _stream(model, words, args, stems, sink, bool(images or clips or melodies or extra))
    start = time.perf_counter()
    if melodies:
        wavs = [convert_audio(w, rate, model.sample_rate, model.audio_channels) for w, rate in melodies]
        wav, tokens = model.generate_with_chroma(
            inputs["descriptions"] or [None] * count, wavs * (count // len(wavs)), model.sample_rate, progress=True,
            return_tokens=True, melody_stems="full_mix" if args.melody_full_mix else None, **extra)
    elif images or clips:
        wav, tokens = model.generate(progress=True, return_tokens=True, **inputs, **extra)
    else:
        wav, tokens = model.generate(words, progress=True, return_tokens=True, **extra)
    progress.close()
    total = time.perf_counter() - start
    steps = sum(model.generation_params.get("decoding_steps") or []) or tokens.shape[-1] + model.lm.num_codebooks - 1
    t = model.timings
    per_encoder = ", ".join(f"{key.split('.', 1)[1]} {_encoder_name(model, key.split('.', 1)[1])} {v * 1e3:.1f} ms"
                            for key, v in t.items() if key.startswith("conditioning."))
    print(f"timing: conditioning {t.get('conditioning', 0) * 1e3:.1f} ms ({per_encoder}) | LM {t.get('lm', 0):.2f} s "
          f"({t.get('lm', 0) / max(steps, 1) * 1e3:.1f} ms/step) | decode {t.get('decode', 0):.2f} s | "
          f"total {total:.2f} s")
    if stems is None:
        print(f"discarded {len(wav)} clip(s) (-o {args.output})")
        return 0
    for stem, audio in zip(stems, wav):
        stem.parent.mkdir(parents=True, exist_ok=True)  # -o new_folder/
        # Loudness normalisation (as upstream's demos) needs 400 ms of audio to measure.
        strategy = "loudness" if audio.shape[-1] >= 0.4 * model.sample_rate else "peak"
        path = audio_write(stem, audio.cpu(), model.sample_rate, strategy=strategy, loudness_compressor=True,
                           overwrite=args.overwrite)
        print(f"wrote {path} ({audio.shape[-1] / model.sample_rate:.2f} s, {model.sample_rate} Hz, "
              f"{audio.shape[0]} channel{'s' if audio.shape[0] > 1 else ''})")
    return 0


def _stream(model, words: list[str], args: argparse.Namespace, stems: list[Path] | None, sink, other: bool) -> int:
    """`--stream` / `-o -`: write the WAV while the tokens are generated (`MusicGen.generate_stream`)."""
    from .data.wav_stream import WavStreamWriter

    if len(words) != 1 or other:
        raise ValueError("--stream and -o - take one text prompt (no --image, --audio-prompt, --melody, --negative)")
    target = sink if sink is not None else os.devnull if stems is None else stems[0].with_name(stems[0].name + ".wav")
    if sink is None and stems is not None:
        stems[0].parent.mkdir(parents=True, exist_ok=True)  # -o new_folder/
    start, first = time.perf_counter(), None
    with WavStreamWriter(target, model.sample_rate, model.audio_channels,
                         overwrite=args.overwrite or stems is None) as out:
        for chunk in model.generate_stream(words):
            first = time.perf_counter() - start if first is None else first
            out.write(chunk[0].cpu())
            seconds = out.data_bytes / (2 * model.audio_channels * model.sample_rate)
    print(f"timing: first audio after {first:.2f} s | total {time.perf_counter() - start:.2f} s")
    print(f"wrote {'stdout' if sink is not None else target} ({seconds:.2f} s, {model.sample_rate} Hz, "
          f"{model.audio_channels} channel{'s' if model.audio_channels > 1 else ''}, streamed, 16-bit, clipped)")
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
    from .quantize import describe_quantization

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
    lines.append(f"LM weights: {describe_quantization(lm)}")
    codec = model.compression_model
    lines.append(f"codec: {type(codec).__name__}, {model.sample_rate} Hz, {model.audio_channels} channel(s), "
                 f"{model.frame_rate:g} frames/s, {sum(p.numel() for p in codec.parameters()) / 1e6:.2f}M params")
    lines.append(f"max_duration: {model.max_duration:g} s")
    return lines


def cmd_inspect(args: argparse.Namespace) -> int:
    from .models.devices import check_device

    check_device(args.device)
    print("\n".join(describe(_load(args.model, args.device))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiocraft-patched", description=__doc__.split("\n")[0],
                                     epilog="`audiocraft-patched VERB --help` describes each verb's arguments.")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="text to music",
                         description="generate [MODEL] PROMPT [PROMPT ...]: MODEL is a checkpoint folder, a hub id in "
                                     "the local Hugging Face cache, 'default' (embedded), 'default-zh' or 'debug'; "
                                     "omitted: default. The first positional is the model when it is one of those "
                                     "names or a word without spaces that names an existing path, starts with '.' "
                                     "or '~', or contains '/'; it must then resolve (else an error names it). "
                                     "Anything else is a prompt; to use such a word as a prompt, name the model "
                                     "first: generate default \"rock/pop\"")
    gen.add_argument("words", nargs="*", metavar="[MODEL] PROMPT")
    gen.add_argument("-m", "--model", help="model (instead of the first positional)")
    gen.add_argument("-o", "--output", default="out.wav",
                     help="output WAV (several prompts: out_0.wav, ...); a folder (or a path ending in '/') receives "
                          "out.wav; .mp3 and other formats are refused; /dev/null discards the audio")
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
    gen.add_argument("--negative", action="append", metavar="TEXT",
                     help="negative prompt: encoded in place of CFG's empty null text, it steers away from what it "
                          "names (e.g. --negative trumpet); one shared by all samples, or repeat it, one per sample")
    gen.add_argument("--duration", type=float, default=5.0, help="seconds (default 5)")
    gen.add_argument("--seed", type=int, default=None,
                     help="random seed (default: drawn at random and printed, so the result can be made again)")
    gen.add_argument("--top-k", type=int, default=250)
    gen.add_argument("--top-p", type=float, default=0.0)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--cfg-coef", type=float, default=3.0)
    gen.add_argument("--greedy", action="store_true", help="argmax instead of sampling")
    gen.add_argument("--extend-stride", type=float, default=None,
                     help="seconds between windows past the model's max_duration (default: upstream's 18 when the "
                          "window is longer, else 60%% of the window: 3 s for the 5 s default model)")
    gen.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps (what this torch has; default cpu)")
    gen.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None,
                     help="LM + text encoder precision (default fp32; bf16 is ~2x faster on recent CPUs)")
    gen.add_argument("--stream", action="store_true",
                     help="write the WAV while generating (valid at every moment; 16-bit, clipped, not normalised); "
                          "one prompt, one window. -o - writes the WAV to stdout (implies --stream)")
    gen.add_argument("--quantize", choices=["int8", "int4", "w8a8", "int8-dynamic"], default=None,
                     help="LM weights in int8 (per channel) or int4 (groups of 128), activations in --dtype "
                          "(use --dtype bf16 with them: their float32 path is slow below AVX-512); w8a8: int8 "
                          "weights and activations (fast with AVX-512); int8-dynamic: torch.ao's dynamic int8 "
                          "(fbgemm; the fastest on AVX2 CPUs, any --dtype; more rounding)")
    gen.add_argument("--compile", action="store_true",
                     help="compile the LM's decode step with torch.compile (needs a C++ compiler; the first "
                          "generation pays 10 s to 2 min, then steps are ~10-15%% faster; not for MAGNeT)")
    gen.add_argument("--threads", type=thread_count, default=0,
                     help="torch threads, 1 to the CPU count (0: torch's default)")
    gen.add_argument("--overwrite", action="store_true", help="replace existing output files")
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress and no note about the embedded model")
    gen.set_defaults(func=cmd_generate)

    ins = sub.add_parser("inspect", help="describe a model: conditioners, encoder width, codebooks, sizes")
    ins.add_argument("model", nargs="?", default="default",
                     help="a checkpoint folder, a hub id in the local cache, 'default' (the embedded model), "
                          "'default-zh' or 'debug'")
    ins.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps (what this torch has)")
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
