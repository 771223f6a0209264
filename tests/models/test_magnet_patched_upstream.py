"""Swapped AudioGen and MAGNeT checkpoints (`model: hf`) in upstream 1.3.0 with patches/ applied.

Issue 11, item 6 asks whether the patch series needs builder lines for these generators: it does
not (upstream's builders already build both LMs; the series' `hf` branch serves every
conditioner provider). Shown here: a tiny upstream-built AudioGen and MAGNeT, swapped by our
`swap` to a tiny T5 of another width, load in the patched upstream (a subprocess whose
PYTHONPATH puts the patched copy first; this file is also its script: `python THIS JOB.json`)
and give our tokens and audio, greedy and sampled.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.upstream
TEXTS = ["rain on a tin roof", "a dog barking"]
KINDS = {"audiogen": ("audiogen/audiogen_base_16khz", "AudioGen", 3), "magnet": ("magnet/magnet_32khz", "MAGNeT", 2)}
SETTINGS = {"greedy": dict(use_sampling=False), "sampled": dict(use_sampling=True, top_k=10)}


def generate(model, kind: str) -> dict:
    """Tokens and audio of every setting, on either side's model."""
    out = {}
    for name, settings in SETTINGS.items():
        extra = dict(decoding_steps=[3, 2, 2, 2]) if kind == "magnet" else dict(duration=0.6)
        model.set_generation_params(**settings, **extra)
        torch.manual_seed(4)
        out[f"{name}_wav"], out[name] = model.generate(TEXTS, return_tokens=True)
    return out


def upstream_side(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    torch.set_num_threads(1)
    sys.path.insert(0, job["tests_dir"])
    from upstream import install_stubs

    install_stubs()  # xformers' attention for MAGNeT included
    import audiocraft
    import audiocraft.models as models

    if not Path(audiocraft.__file__).is_relative_to(job["tree"]):
        raise RuntimeError(f"imported {audiocraft.__file__}, not the patched tree {job['tree']}")
    results = {}
    for kind, folder in job["folders"].items():
        model = getattr(models, KINDS[kind][1]).get_pretrained(folder, device="cpu")
        results[kind] = {"conditioner": type(model.lm.condition_provider.conditioners["description"]).__module__,
                         **generate(model, kind)}
    torch.save(results, job["out"])


if __name__ == "__main__":
    upstream_side(sys.argv[1])
    sys.exit(0)


def test_swapped_checkpoints_run_in_patched_upstream(tiny_t5_dir, tiny_t5_large_dir, tmp_path):
    from audiocraft_patched.models import load_generator
    from audiocraft_patched.patching import rebase
    from audiocraft_patched.patching.upstream import installed_tree
    from audiocraft_patched.swap import swap_checkpoint
    from audiocraft_patched.utils.tiny import make_tiny_t5
    from upstream_models import build_upstream_export

    tree = installed_tree(tmp_path / "patched", "1.3.0")
    report = rebase(tree, in_place=True)
    assert report.exit_code == 0, report.format()
    encoder = make_tiny_t5(tmp_path / "t5-48", d_model=48, num_heads=2, d_kv=8, d_ff=32, seed=3)
    folders = {}
    for kind, (solver, _, seconds) in KINDS.items():
        (tmp_path / kind).mkdir()
        source = build_upstream_export(tmp_path / kind, solver, seconds)
        folders[kind] = str(swap_checkpoint(source, encoder, tmp_path / f"{kind}-swapped"))
    job = {"tree": str(tree), "tests_dir": str(Path(__file__).resolve().parents[1]), "folders": folders,
           "out": str(tmp_path / "results.pt")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, __file__, str(tmp_path / "job.json")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    theirs = torch.load(tmp_path / "results.pt", weights_only=True)
    for kind, folder in folders.items():
        assert theirs[kind]["conditioner"] == "audiocraft.modules.hf_conditioner"
        mine = generate(load_generator(folder, "cpu"), kind)
        for name in SETTINGS:
            assert torch.equal(mine[name], theirs[kind][name]), (kind, name)
            torch.testing.assert_close(mine[f"{name}_wav"], theirs[kind][f"{name}_wav"], atol=1e-5, rtol=0)
