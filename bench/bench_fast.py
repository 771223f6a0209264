"""The fast paths, on the same weights: ours quantized (int8, int4, int8-dynamic, w8a8) and compiled, against the
peers' best CPU options, at a short and a long generation; their error against float32; ours' time to first audio.

Rows (batch 1, greedy, CFG 3):
- upstream float32 (its CPU path); transformers float32, and with `torch.ao`'s dynamic int8 on every
  Linear (its documented CPU quantization);
- ours in float32, bfloat16, int8 and int4 (weight-only, bfloat16 activations), int8-dynamic (int8 weights,
  torch.ao's 7-bit dynamic activations through fbgemm, float32 elsewhere: its kernel's dtype) and w8a8 (int8
  weights and activations), each int/bf16 one eager and compiled (`MusicGen.compile_step`).
Each compiled row's model is warmed at each length before it is timed; the compile time is reported.
"""
from __future__ import annotations

import copy
import json
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import torch

import bench_build as bb
import bench_hf as bh
import bench_measure as bm
from audiocraft_patched.modules.weight_quant import fast_int_mm

TEXT = ["calm piano with soft drums"]
# w8a8 only where its int8 x int8 kernel is fast (AVX-512): on an AVX2 CPU a 10 s run would take ~20 min.
QUANTIZED = ("int8", "int4", "int8-dynamic") + (("w8a8",) if fast_int_mm(torch.device("cpu")) else ())
COMPILED = ("bf16",) + QUANTIZED  # the ours variants also timed compiled
SAVED = ("int8", "int4", "int8-dynamic")  # the quantized checkpoints saved for the memory workers


def compute_dtype(weights: str) -> torch.dtype:
    """The activations' dtype of a variant: float32 for int8-dynamic (fbgemm's), else bfloat16."""
    return torch.float32 if weights == "int8-dynamic" else torch.bfloat16


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def group_size(shape: bb.Shape) -> int:
    """int4 group size: 128 (the measured best, see bench/README.md), or the width of a smaller shape."""
    return min(128, shape.dim)


def ours_variant(ours, weights: str, shape: bb.Shape):
    """A copy of our float32 model in bfloat16, int8, int4 (weight-only; activations bfloat16), int8-dynamic
    (activations float32) or w8a8."""
    model, _ = bb.cast_ours(bb.with_own_lm(ours), compute_dtype(weights))
    if weights != "bf16":
        model.quantize(weights, group_size=group_size(shape))
    return model


def transformers_int8(model):
    """transformers' MusicGen with `torch.ao.quantization.quantize_dynamic` int8 on its Linear layers."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notice for its quantized tensors
        return quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8).eval()


def quantized_export(model, folder: Path, source: str) -> Path:
    """Save a quantized model once (for the memory workers, which load it as users would)."""
    from audiocraft_patched.quantize import save_quantized

    marker = folder / "quantized-from.json"
    if not (marker.is_file() and marker.read_text() == source):
        save_quantized(model, folder, overwrite=True)
        marker.write_text(source)
    return folder


def variants(impls: dict, models, shape: bb.Shape) -> tuple[dict, dict, dict, object]:
    """(runs, refs, models, tokenizer): name -> (frames -> codes, compiled?); name -> the run whose tokens
    it is compared with; name -> the model behind each eager run; transformers' tokenizer."""
    ours = impls["ours"]
    source = (models.export / "bench-shape.json").read_text()
    quantized = {w: ours_variant(ours, w, shape) for w in QUANTIZED}
    for w in SAVED:
        quantized_export(quantized[w], models.workdir / f"export-{w}", source)
    dense = {"ours fp32": ours, "ours bf16": impls["ours-bf16"], **{f"ours {w}": m for w, m in quantized.items()}}
    runs, refs = {}, {}
    if "upstream" in impls:
        runs["upstream fp32"] = (lambda frames: bb.lm_generate(impls["upstream"], TEXT, frames, upstream=True), False)
        refs["ours fp32"] = "upstream fp32"
    tokenizer = models.tokenizer()
    hf = impls["transformers"]
    runs["transformers fp32"] = (lambda frames: bh.generate(hf, tokenizer, TEXT, frames), False)
    hf_int8 = transformers_int8(hf)
    runs["transformers int8 (torch.ao)"] = (lambda frames: bh.generate(hf_int8, tokenizer, TEXT, frames), False)
    refs["transformers int8 (torch.ao)"] = "transformers fp32"
    from audiocraft_patched.models.lm import compiler_note

    note = compiler_note()
    if note is not None:
        log(f"compiled rows left out: {note}")
    for name, model in dense.items():
        runs[name] = (partial(_ours, model, False), False)
        if name != "ours fp32":
            refs[name] = "ours fp32"
        if note is None and name.split()[1] in COMPILED:
            runs[f"{name} compiled"] = (partial(_ours, model, True), True)
            refs[f"{name} compiled"] = "ours fp32"
    return runs, refs, {"transformers fp32": hf, "transformers int8 (torch.ao)": hf_int8, **dense}, tokenizer


def _ours(model, compiled: bool, frames: int) -> torch.Tensor:
    model.compile_step(compiled)
    return bb.lm_generate(model, TEXT, frames)


def time_length(runs: dict, refs: dict, frames: int, reps: int, shape: bb.Shape, warm_all: bool) -> tuple[list, dict]:
    """ms/step of every run at `frames`, interleaved; compiled ones warmed (compiled) at this length first."""
    steps = frames + shape.n_q - 1
    compile_s = {}
    for name, (run, compiled) in runs.items():
        if compiled:
            start = time.perf_counter()
            run(frames)
            compile_s[name] = time.perf_counter() - start
    warmups = {name: partial(run, 2) for name, (run, compiled) in runs.items() if warm_all and not compiled}
    log(f"timing the fast paths: {reps} round(s) of {frames} frames ...")
    times, codes = bm.interleave({name: partial(run, frames) for name, (run, _) in runs.items()}, reps, warmups)
    base = bm.median(times["upstream fp32"]) if "upstream fp32" in times else None
    rows = []
    for name, t in times.items():
        ref = refs.get(name)
        rows.append({"impl": name, "frames": frames, "ms_per_step": 1e3 * bm.median(t) / steps,
                     "best_ms_per_step": 1e3 * min(t) / steps,
                     "x_upstream": base / bm.median(t) if base else None,
                     "tokens_ref": ref if ref in codes else None,
                     "tokens_equal_pct": bm.agreement(codes[name], codes[ref]) if ref in codes else None,
                     "warm_s": compile_s.get(name), "seconds": t})
    return rows, codes


def errors(models_by_name: dict, tokenizer, impls: dict, shape: bb.Shape) -> list[dict]:
    """Full-pass logits on fixed codes against float32: max and mean |error|, and top-1 agreement."""
    codes = torch.randint(shape.card, (1, shape.n_q, 48), generator=torch.Generator().manual_seed(2))
    ours_ref = bb.pattern_logits(impls["ours"], TEXT, codes)
    sequence = bb.pattern_sequence(impls["ours"], codes)
    hf_ref = bh.pattern_logits(impls["transformers"], tokenizer, TEXT, sequence)
    out = []
    for name, model in models_by_name.items():
        if name in ("ours fp32", "transformers fp32"):
            continue
        if name.startswith("transformers"):
            logits, ref = bh.pattern_logits(model, tokenizer, TEXT, sequence), hf_ref
        else:
            logits, ref = bb.pattern_logits(model, TEXT, codes), ours_ref
        valid = torch.isfinite(ref) & torch.isfinite(logits)  # the pattern's padding positions are NaN
        diff = (logits - ref).abs()[valid]
        top1 = (logits.argmax(-1) == ref.argmax(-1))[valid.all(-1)].float().mean().item()
        out.append({"impl": name, "max_abs_err": diff.max().item(), "mean_abs_err": diff.mean().item(),
                    "logit_std": ref[valid].std().item(), "top1_agree_pct": 100.0 * top1})
    return out


def first_audio(models_by_name: dict, runs: dict, impls: dict, frames: int, reps: int, long_rows: list,
                shape: bb.Shape) -> list[dict]:
    """Seconds to the first audio chunk (0.25 s: the default first chunk) of a `frames`-long `generate_stream`.

    Upstream has no streaming: its first audio is the whole generation plus its decode.
    """
    duration = (frames + 0.5) / shape.frame_rate
    firsts: dict[str, list[float]] = {}

    def stream(name, model, compiled):
        model.compile_step(compiled)
        model.set_generation_params(use_sampling=False, cfg_coef=3.0, duration=duration)
        chunks = model.generate_stream(TEXT, chunk_seconds=1.0)
        start = time.perf_counter()
        next(chunks)
        firsts.setdefault(name, []).append(time.perf_counter() - start)
        chunks.close()

    timed = {name: partial(stream, name, models_by_name[name.removesuffix(" compiled")], name.endswith("compiled"))
             for name in runs if name.startswith("ours")}
    log(f"timing the first audio of a {duration:.0f} s stream: {reps} rounds ...")
    bm.interleave(timed, reps)  # (its rotation of the order; the time to the first chunk is kept in `firsts`)
    rows = [{"impl": name, "first_audio_s": bm.median(t), "seconds": t} for name, t in firsts.items()]
    if "upstream" in impls:
        long_s = next(r for r in long_rows if r["impl"] == "upstream fp32")
        codes = torch.randint(shape.card, (1, shape.n_q, frames), generator=torch.Generator().manual_seed(3))
        start = time.perf_counter()
        with torch.no_grad():
            impls["upstream"].compression_model.decode(codes)
        decode_s = time.perf_counter() - start
        rows.insert(0, {"impl": "upstream fp32 (no streaming: whole generation + decode)",
                        "first_audio_s": bm.median(long_s["seconds"]) + decode_s, "seconds": None})
    return rows


def run_fast(impls: dict, models, args, shape: bb.Shape) -> dict:
    """The fast-path section of the results: rows at each length, errors, first audio."""
    runs, refs, by_name, tokenizer = variants(impls, models, shape)
    out = {"lengths": [], "errors": errors(by_name, tokenizer, impls, shape)}
    for i, (frames, reps) in enumerate(((args.fast_frames, args.reps), (args.long_frames, args.long_reps))):
        if frames:
            rows, _ = time_length(runs, refs, frames, reps, shape, warm_all=i == 0)
            out["lengths"].append(rows)
    if args.long_frames and args.first_audio_reps:
        out["first_audio"] = first_audio(by_name, runs, impls, args.long_frames, args.first_audio_reps,
                                         out["lengths"][-1], shape)
    for model in by_name.values():
        if hasattr(model, "compile_step"):
            model.compile_step(False)
    return json.loads(json.dumps(out))  # plain numbers only (no tensors)
