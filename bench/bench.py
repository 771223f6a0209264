"""MusicGen speed and memory: upstream audiocraft 1.3.0 vs audiocraft_patched vs transformers, same weights.

    python bench/bench.py [--quick] [--threads 2] [--json out.json]

Builds the musicgen-small shape with random weights (LM 1024 wide, 24 layers, 4 x 2048
codebooks, a t5-base-shaped text encoder, the 32 kHz EnCodec), loads the same weights into
the three implementations, checks that they compute the same logits and audio, then prints,
from interleaved runs (medians): frames/s at batch 1 and 4 with CFG 3 in float32 and bfloat16,
token agreement, conditioning latency per text encoder, EnCodec decode time, and the peak
resident memory of each implementation in a fresh process. Everything is offline: the T5
goes into a throw-away Hugging Face cache, never the user's. See bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_run import MEMORY_IMPLS, QUANTIZED_MEMORY  # noqa: E402  (imports torch, not the Hugging Face libraries)

# Shorter than 2K - 1 tokens (K = 4 codebooks in both shapes), transformers' MusicGen builds no delay
# pattern (`build_delay_pattern_mask`) and returns its whole sequence (frames + 3 columns), whose
# tokens cannot be compared with the others'.
MIN_FRAMES = 3
QUICK = {"frames": 8, "reps": 3, "decode_frames": 50, "cond_reps": 10,
         "memory": "upstream,ours,transformers", "upstream_bf16": False,
         "fast_frames": 8, "long_frames": 0, "long_reps": 1, "first_audio_reps": 0}
FULL = {"frames": 24, "reps": 7, "decode_frames": 250, "cond_reps": 30,
        "memory": "upstream,ours,ours-bf16,ours-int8,ours-int4,ours-int8-dynamic,transformers,transformers-bf16",
        "upstream_bf16": True,
        "fast_frames": 50, "long_frames": 500, "long_reps": 1, "first_audio_reps": 3}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter runs (fewer frames, rounds and memory workers)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--shape", default="small", help="model shape: small (musicgen-small) or tiny (smoke test)")
    p.add_argument("--frames", type=int, help="frames generated per timed run (50 = 1 s of audio)")
    p.add_argument("--reps", type=int, help="timed rounds (each runs every implementation once)")
    p.add_argument("--batches", default="1,4", help="batch sizes, comma-separated (default 1,4)")
    p.add_argument("--decode-frames", type=int, help="frames decoded by EnCodec per timed run")
    p.add_argument("--cond-reps", type=int, help="rounds of the conditioning latency test")
    p.add_argument("--memory", help="implementations whose peak memory to measure, comma-separated, or 'none'")
    p.add_argument("--no-upstream-bf16", dest="upstream_bf16", action="store_false", default=None,
                   help="skip upstream with bfloat16 weights (not an upstream option; measured for reference)")
    p.add_argument("--no-fast", dest="fast", action="store_false",
                   help="skip the fast-path section (int8/int4, compiled, torch.ao int8, first audio)")
    p.add_argument("--fast-frames", type=int, help="frames of the fast-path section's short runs (default 50: 1 s)")
    p.add_argument("--long-frames", type=int, help="frames of its long runs (default 500: 10 s; 0 skips them)")
    p.add_argument("--long-reps", type=int, help="rounds of the long runs (default 1)")
    p.add_argument("--first-audio-reps", type=int, help="rounds of the time to first audio (default 3; 0 skips)")
    p.add_argument("--workdir", type=Path, help="keep models here and reuse them next time (default: a temp dir)")
    p.add_argument("--hf-cache", type=Path, help="Hugging Face cache to put the random 't5-base' in "
                                                 "(default: <workdir>/hf-cache)")
    p.add_argument("--child", choices=MEMORY_IMPLS, help=argparse.SUPPRESS)  # peak-memory worker
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.shape not in ("small", "tiny"):
        p.error(f"--shape must be small or tiny, got {args.shape!r}")
    args.batches = [int(b) for b in args.batches.split(",")]
    args.memory = [] if args.memory == "none" else [m for m in args.memory.split(",") if m]
    unknown = sorted(set(args.memory) - set(MEMORY_IMPLS))
    if unknown:
        p.error(f"--memory: unknown implementations {unknown}; choose from {list(MEMORY_IMPLS)} or 'none'")
    if min(args.frames, args.reps, args.decode_frames, args.cond_reps, args.threads, args.fast_frames,
           args.long_reps, *args.batches) < 1:
        p.error("--frames, --reps, --decode-frames, --cond-reps, --threads, --fast-frames, --long-reps and "
                "--batches must be >= 1")
    if min(args.long_frames, args.first_audio_reps) < 0:
        p.error("--long-frames and --first-audio-reps must be >= 0")
    short = [f"{name} {value}" for name, value in (("--frames", args.frames), ("--fast-frames", args.fast_frames),
                                                    ("--long-frames", args.long_frames))
             if 0 < value < MIN_FRAMES]
    if short:
        p.error(f"{', '.join(short)}: generate at least {MIN_FRAMES} frames "
                f"(below that, transformers' MusicGen returns its delay-pattern sequence, not frames; "
                f"--long-frames 0 skips the long runs)")
    return args


def offline_hub(args: argparse.Namespace) -> Path:
    """Point the Hugging Face libraries at a throw-away cache, offline; return the cache folder.

    They read the cache location once, at import: if huggingface_hub is already imported (the
    bench called from Python), the caller must name that cache with --hf-cache, as a promise
    that a random model may be written into it under the name 't5-base'.
    """
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import constants

        current = Path(constants.HF_HUB_CACHE).resolve()
        if args.hf_cache is None or args.hf_cache.resolve() != current or not constants.HF_HUB_OFFLINE:
            raise RuntimeError(
                f"huggingface_hub is already imported with cache {current} (offline: {constants.HF_HUB_OFFLINE}); "
                "the bench writes a random 't5-base' into its cache, so pass --hf-cache with that folder to confirm "
                "it is a throw-away one, and set HF_HUB_OFFLINE=1 before importing huggingface_hub; or run "
                "bench/bench.py as a script")
        return current
    cache = args.hf_cache or args.workdir / "hf-cache"
    os.environ["HF_HUB_CACHE"] = str(cache)
    return cache


def quiet() -> None:
    """Silence progress bars and deprecation chatter of the libraries (not our own output)."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Models:
    """Builds (or reuses) the shared weights under `workdir` and loads each implementation."""

    def __init__(self, shape_name: str, workdir: Path):
        import bench_build as bb

        self.shape = bb.SHAPES[shape_name]
        self.workdir = workdir
        if not (workdir / "export" / "bench-shape.json").is_file():
            log(f"building the {shape_name} shape with random weights in {workdir} (reused with --workdir) ...")
        self.t5 = bb.ensure_t5(self.shape)
        self.export = bb.write_export(workdir / "export", self.shape)
        self.hf_dir = workdir / "transformers"

    def convert_hf(self):
        """transformers' MusicGen with the export's weights (converted once, then saved for reuse)."""
        import bench_hf as bh

        marker = self.hf_dir / "converted-from.json"
        source = (self.export / "bench-shape.json").read_text()
        if marker.is_file() and marker.read_text() == source:
            return bh.load(self.hf_dir)
        model = bh.convert(self.export, self.t5, self.hf_dir)
        marker.write_text(source)
        return model

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.t5)

    def load(self, impl: str):
        """One implementation, loaded the way its users load it."""
        import torch

        import bench_build as bb
        import bench_hf as bh

        dtype = torch.bfloat16 if impl.endswith("-bf16") else torch.float32
        if impl.startswith("upstream"):
            if bb.import_upstream() is None:
                raise RuntimeError("upstream audiocraft 1.3.0 is not installed: pip install --no-deps -r "
                                   "requirements-upstream.txt")
            model = bb.load_upstream(self.export)
            if dtype != torch.float32:
                model.lm.to(dtype)  # not an upstream option (it autocasts on GPU only); for reference
            return model
        if impl in QUANTIZED_MEMORY:  # the quantized checkpoint bench_fast saved, as users load it
            from bench_fast import compute_dtype

            from audiocraft_patched.models import MusicGen

            weights = impl.removeprefix("ours-")
            folder = self.workdir / f"export-{weights}"
            if not (folder / "quantized-from.json").is_file():
                raise RuntimeError(f"{folder} is missing: the fast-path section saves it (run without --no-fast)")
            return MusicGen.get_pretrained(str(folder), device="cpu", dtype=compute_dtype(weights))
        if impl.startswith("ours"):
            return bb.load_ours(self.export, dtype)[0]
        return bh.load(self.hf_dir, dtype)


def child(args: argparse.Namespace) -> int:
    """Peak-memory worker: load one implementation, generate (batch 1, with decoding), report RSS."""
    import torch

    torch.set_num_threads(args.threads)
    quiet()
    import bench_build as bb
    import bench_hf as bh
    import bench_measure as bm

    models = Models(args.shape, args.workdir)
    imported = bm.memory_status()
    start = time.perf_counter()
    model = models.load(args.child)
    load_s = time.perf_counter() - start
    loaded = bm.memory_status()
    reset = bm.reset_peak()
    texts = bb.prompts(1)
    if args.child.startswith("transformers"):
        bh.generate(model, models.tokenizer(), texts, args.frames, decode=True)
    else:
        # (frames + 0.5) / frame_rate: int(duration * frame_rate) is `frames` whatever the rounding.
        model.set_generation_params(use_sampling=False, cfg_coef=3.0, duration=(args.frames + 0.5) / model.frame_rate)
        with torch.no_grad():
            model.generate(texts)
    done = bm.memory_status()
    print(json.dumps({"impl": args.child, "load_s": load_s, "imports_mib": imported["VmRSS"],
                      "load_peak_mib": loaded["VmHWM"], "generate_peak_mib": done["VmHWM"] if reset else None,
                      "peak_mib": max(loaded["VmHWM"], done["VmHWM"])}))
    return 0


def run_child(args: argparse.Namespace, impl: str, hf_cache: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", impl, "--shape", args.shape,
               "--workdir", str(args.workdir), "--hf-cache", str(hf_cache), "--threads", str(args.threads),
               "--frames", str(args.frames)]
    env = dict(os.environ, HF_HUB_CACHE=str(hf_cache))
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker for {impl} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict | int:
    """Run the bench; returns the results (the worker's exit status with --child)."""
    args = parse_args(argv)
    temporary = args.workdir is None
    if temporary:
        args.workdir = Path(tempfile.mkdtemp(prefix="musicgen-bench-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    hf_cache = offline_hub(args)
    if args.child:
        return child(args)
    import torch

    torch.set_num_threads(args.threads)
    quiet()
    from bench_report import print_report
    from bench_run import run_all

    try:
        results = run_all(args, Models, hf_cache, run_child)
    finally:
        if temporary:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print_report(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
        log(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    out = main()
    sys.exit(out if isinstance(out, int) else 0)
