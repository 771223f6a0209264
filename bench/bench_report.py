"""The bench's tables, printed from the results dict that `bench.py --json` also writes."""
from __future__ import annotations


def _fmt(value, spec: str = ".2f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; the first left-aligned, the others right-aligned."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]

    def line(cells):
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(cells).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def report(results: dict) -> str:
    m, s, shape = results["machine"], results["settings"], results["shape"]
    out = [f"MusicGen bench, {shape['name']} shape: LM {results['lm_params'] / 1e6:.1f}M parameters "
           f"(dim {shape['dim']}, {shape['num_layers']} layers, {shape['n_q']} x {shape['card']} codebooks), "
           f"T5 d_model {shape['t5']['d_model']} x {shape['t5']['num_layers']} layers, "
           f"EnCodec {shape['sample_rate'] // 1000} kHz",
           f"{m['date']}; {m['cpu']} ({m['cpu_count']} CPUs), {s['threads']} torch threads; torch {m['torch']}, "
           f"transformers {m['transformers']}", ""]
    cpus, loads = int(m["cpu_count"]), [x for x in results.get("load_average", []) if x is not None]
    if loads and max(loads) > cpus:
        out[-1:-1] = [f"WARNING: the machine was busy (1-min load average up to {max(loads):.1f} on {cpus} CPUs): "
                      "timings are noisy, and with more threads than idle CPUs a step can take 10x longer (compare "
                      "'best' with the median); run again when it is idle, or with fewer --threads."]
    checks = [[name, f"{c['max_abs_diff']:.2e}", f"{c['max_abs_value']:.2f}", "asserted" if c["asserted"] else "info"]
              for name, c in results["checks"].items()]
    out += ["Same weights, same outputs (fixed codes, one full pass):",
            table(["check", "max |diff|", "max |value|", ""], checks), ""]

    gen = results["generation"]
    rows = [[r["impl"], r["dtype"], str(r["batch"]), f"{r['ms_per_step']:.1f}", f"{r['best_ms_per_step']:.1f}",
             f"{r['frames_per_s']:.2f}",
             _fmt(r["x_upstream"]), _fmt(r["x_transformers"]),
             "-" if r["tokens_ref"] is None else f"{r['tokens_equal_pct']:.1f}% vs {r['tokens_ref']}"]
            for r in gen]
    frames = gen[0]["frames"] if gen else 0
    out += [f"Generation: greedy, CFG 3 (the LM runs 2 x batch rows), {frames} frames per run, conditioning included, "
            f"no decoding; median of {s['reps']} interleaved rounds. x upstream: vs upstream float32 (its CPU "
            "path); x transformers: vs transformers in the same dtype.",
            table(["impl", "dtype", "batch", "ms/step", "best", "frames/s", "x upstream", "x transformers",
                   "equal tokens"],
                  rows), ""]

    cond = results["conditioning"]
    t5 = cond.get("t5-base shape (ours)", {}).get("miss_ms")
    rows = [[name, f"{c['miss_ms']:.2f}", _fmt(t5 / c["miss_ms"] if t5 else None, ".1f"),
             _fmt(c["cached_miss_ms"], ".2f", "no cache"), _fmt(c["hit_ms"], ".3f", "no cache")]
            for name, c in cond.items()]
    out += [f"Conditioning: tokenize + encode one text and its CFG null, median of {s['cond_reps']} rounds; a miss "
            "encodes a text not seen before; with the embedding cache on, a hit repeats one.",
            table(["encoder", "ms (no cache)", "x t5 (ours)", "cache miss ms", "cache hit ms"], rows), ""]

    rows = [[d["impl"], f"{d['ms']:.1f}", f"{d['x_realtime']:.1f}"] for d in results["decode"]]
    if results["decode"]:
        out += [f"EnCodec decode of {results['decode'][0]['frames']} frames, batch 1, median of {s['reps']} rounds:",
                table(["impl", "ms", "x realtime"], rows), ""]

    out += fast_report(results.get("fast"), s)

    if results["memory"]:
        rows = [[r["impl"], f"{r['load_s']:.1f}", f"{r['imports_mib']:.0f}", f"{r['load_peak_mib']:.0f}",
                 _fmt(r["generate_peak_mib"], ".0f", "n/a"), f"{r['peak_mib']:.0f}"] for r in results["memory"]]
        out += [f"Load time and peak resident memory (MiB), one fresh process each: load as users do, then "
                f"generate {s['frames']} frames at batch 1 and decode them.",
                table(["impl", "load s", "after imports", "load peak", "generate peak", "peak"], rows), ""]
    return "\n".join(out)


def fast_report(fast: dict | None, s: dict) -> list[str]:
    """The fast-path section (bench_fast.py): ms/step at each length, errors against float32, first audio."""
    if not fast:
        return []
    out = []
    for rows in fast["lengths"]:
        frames = rows[0]["frames"]
        table_rows = [[r["impl"], f"{r['ms_per_step']:.1f}", f"{r['best_ms_per_step']:.1f}", _fmt(r["x_upstream"]),
                       "-" if r["tokens_ref"] is None else f"{r['tokens_equal_pct']:.1f}% vs {r['tokens_ref']}",
                       _fmt(r["warm_s"], ".0f")] for r in rows]
        out += [f"Fast paths: batch 1, greedy, CFG 3, {frames} frames ({frames / 50:g} s at 50 frames/s), no decoding; "
                f"median of {len(rows[0]['seconds'])} interleaved round(s). int8/int4: weight-only, bfloat16 "
                "activations; int8-dynamic: int8 weights, 7-bit dynamic activations (fbgemm), float32; w8a8: int8 "
                "weights and activations; compiled: MusicGen.compile_step, warmed (compiled) "
                "at this length first (warm s).",
                table(["impl", "ms/step", "best", "x upstream", "equal tokens", "warm s"], table_rows), ""]
    rows = [[e["impl"], f"{e['max_abs_err']:.3f}", f"{e['mean_abs_err']:.4f}", f"{e['logit_std']:.2f}",
             f"{e['top1_agree_pct']:.1f}%"] for e in fast["errors"]]
    out += ["Error against float32: one full pass over fixed codes (48 frames), logits of every position and "
            "codebook; top-1: the argmax is float32's.",
            table(["impl", "max |err|", "mean |err|", "logit std", "top-1 agree"], rows), ""]
    if fast.get("first_audio"):
        rows = [[r["impl"], f"{r['first_audio_s']:.2f}"] for r in fast["first_audio"]]
        frames = fast["lengths"][-1][0]["frames"]
        out += [f"Time to first audio: generate_stream of {frames / 50:g} s (a first chunk of 0.25 s, then 1 s; "
                "1 s of context, 0.2 s lookahead), conditioning included; median.",
                table(["impl", "first audio s"], rows), ""]
    return out


def print_report(results: dict) -> None:
    print(report(results), flush=True)
