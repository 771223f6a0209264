"""The command line: `align`, `compare-encoders`, and generating from the result in a fresh process."""
import json
import os
import subprocess
import sys

import pytest

from audiocraft_patched.align.cli import adapter_spec, main
from audiocraft_patched.align.metrics import png_available
from audiocraft_patched.utils.tiny import captions
from conftest import minilm_dir


def test_adapter_spec():
    assert adapter_spec("resampler", ["n_tokens=8", "dropout=0.1", "width=64"]) == {
        "kind": "resampler", "n_tokens": 8, "dropout": 0.1, "width": 64}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        adapter_spec("mlp", ["hidden"])


def test_align_compare_and_generate_from_the_command_line(tiny_musicgen_dir, tmp_path, capsys):
    texts = list(dict.fromkeys(captions(300, seed=7)))
    (tmp_path / "train.txt").write_text("\n".join(texts[:160]) + "\n")
    (tmp_path / "held.txt").write_text("\n".join(texts[160:220]) + "\n")
    out = tmp_path / "aligned"
    code = main(["align", str(tiny_musicgen_dir), "--student", minilm_dir(), "--captions", str(tmp_path / "train.txt"),
                 "-o", str(out), "--adapter", "mlp", "--adapter-option", "hidden=64", "--codes", "teacher",
                 "--steps", "60", "--batch-size", "16", "--lr", "3e-3", "--holdout", "0.1", "--threads", "1", "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "held-out kl:" in printed and str(out) in printed
    assert {"state_dict.bin", "compression_state_dict.bin", "train_state.pt", "log.jsonl", "metrics.json"} <= {
        p.name for p in out.iterdir()}

    report = tmp_path / "compare.json"
    code = main(["compare-encoders", str(tiny_musicgen_dir), minilm_dir(), str(out), "--captions",
                 str(tmp_path / "held.txt"), "--json", str(report), "--threads", "1"])
    assert code == 0
    table = capsys.readouterr().out
    assert "untrained projection" in table and "kl_cfg" in table
    result = json.loads(report.read_text())
    base, aligned = result["rows"]
    assert result["n_texts"] == 60 and base["space"] == "encoder" and aligned["space"] == "condition"
    for row in (base, aligned):
        assert 0 <= row["cka"] <= 1 and 0 <= row["r@1"] <= row["r@5"] <= 1 and row["kl"] >= 0
    assert aligned["kl"] < base["kl"]
    with pytest.raises(FileExistsError, match="pass --overwrite"):  # refused before any work
        main(["compare-encoders", str(tiny_musicgen_dir), str(out), "--captions", str(tmp_path / "held.txt"),
              "--json", str(report)])
    assert json.loads(report.read_text()) == result

    if png_available():
        main(["compare-encoders", str(tiny_musicgen_dir), str(out), "--captions", str(tmp_path / "held.txt"),
              "--png", str(tmp_path / "plot.png")])
        assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        with pytest.raises(ValueError, match="--png needs matplotlib"):
            main(["compare-encoders", str(tiny_musicgen_dir), str(out), "--captions", str(tmp_path / "held.txt"),
                  "--png", str(tmp_path / "plot.png")])

    # A fresh interpreter knows `hf_adapter` from the checkpoint alone, and generates with it.
    wav = tmp_path / "song.wav"
    run = subprocess.run([sys.executable, "-m", "audiocraft_patched.cli", "generate", str(out), "calm piano solo",
                          "-o", str(wav), "--duration", "0.3", "--threads", "1", "-q"],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert wav.is_file() and wav.stat().st_size > 44


def test_cli_errors_are_clear(tiny_musicgen_dir, tmp_path):
    file = tmp_path / "c.txt"
    file.write_text("\n".join(captions(40, seed=1)) + "\n")
    with pytest.raises(SystemExit):  # argparse: --captions and --pairs exclude each other
        main(["align", str(tiny_musicgen_dir), "--student", "x", "--captions", str(file), "--pairs", str(file),
              "-o", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="no option.*'n_tokens'"):
        main(["align", str(tiny_musicgen_dir), "--student", minilm_dir(), "--captions", str(file), "-o",
              str(tmp_path / "o"), "--adapter", "mlp", "--adapter-option", "n_tokens=3"])


def test_training_flags_come_from_train_config():
    """One dataclass: every flag's default is the config's, and RESUME_KEYS is what the fields mark."""
    import argparse
    import dataclasses

    from audiocraft_patched.align.config import RESUME_KEYS, TrainConfig, add_flags, from_args

    for verb, extra in (("align", ["--student", "s", "--captions", "c.txt"]), ("finetune", ["--manifest", "m.jsonl"])):
        parser = argparse.ArgumentParser()
        add_flags(parser, verb)
        cfg = from_args(parser.parse_args(["model", "-o", "out", *extra]), verb)
        defaults = TrainConfig(mode=verb, model="model", out="out", lr=1e-3 if verb == "align" else 1e-4)
        expected = {**dataclasses.asdict(defaults), "student": "s" if verb == "align" else None,
                    "captions": "c.txt" if verb == "align" else None, "manifest": "m.jsonl" if verb == "finetune"
                    else None}
        assert dataclasses.asdict(cfg) == expected
    parser = argparse.ArgumentParser()
    add_flags(parser, "finetune")
    cfg = from_args(parser.parse_args(["m", "-o", "o", "--manifest", "x", "--lora-targets", "q, k", "--holdout", "3",
                                       "--adapter", "mlp", "--adapter-option", "hidden=16", "-q", "--train-encoder"]),
                    "finetune")
    assert (cfg.lora_targets, cfg.holdout, cfg.adapter, cfg.progress, cfg.train_encoder) == (
        ("q", "k"), 3, {"kind": "mlp", "hidden": 16}, False, True)
    assert set(RESUME_KEYS) == {"mode", "model", "student", "adapter", "pooling", "layer", "attribute", "captions",
                                "pairs", "losses", "codes", "code_steps", "manifest", "segment_steps", "lora_rank",
                                "lora_alpha", "lora_targets", "train_encoder", "batch_size", "holdout", "seed"}
    with pytest.raises(SystemExit):  # align needs one of --captions / --pairs
        parser = argparse.ArgumentParser()
        add_flags(parser, "align")
        parser.parse_args(["m", "-o", "o", "--student", "s"])
