"""Upstream audiocraft 1.3.0 with patches/ applied, against audiocraft_patched, on the same tiny weights.

The series is applied by `rebase --in-place` to a copy of the installed (RECORD-checked) 1.3.0
package. The patched upstream runs in a subprocess whose PYTHONPATH puts that copy first, since
the unpatched `audiocraft` is importable here too; this file is also that subprocess's script
(`python test_patched_upstream.py JOB.json`). For a tiny MusicGen on `model: hf` with a tiny T5
and a tiny BERT, a checkpoint written by each side is loaded by both, and the conditioner
outputs, logits on fixed codes, greedy and sampled tokens and audio must agree. The subprocess
also runs the series' own upstream test file (tests/modules/test_hf_conditioner.py) with pytest.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.upstream
TESTS_DIR = Path(__file__).resolve().parents[1]
TEXTS = ["calm piano with soft drums", None, "", "fast techno beat at 120 bpm, synth and bass"]
ENCODERS = ("t5", "bert")
UPSTREAM_TEST = "tests/modules/test_hf_conditioner.py"


def make_tiny_bert(folder: Path) -> Path:
    """A random 2-layer BERT (width 24) with a word-level vocabulary of the test captions."""
    from transformers import BertConfig, BertModel, BertTokenizer

    from audiocraft_patched.utils.tiny import captions

    words = sorted({w for c in captions() for w in c.replace(",", " ").split()})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ","] + words) + "\n")
    tokenizer = BertTokenizer.from_pretrained(str(folder))  # BertTokenizer(vocab_file=) ignores it in transformers 5
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(str(folder))
    return folder


def hf_configs(encoder: Path) -> tuple[dict, dict]:
    """LM and codec `xp.cfg`s of a tiny MusicGen whose description goes through `model: hf`."""
    from audiocraft_patched.utils.tiny import tiny_encodec_config, tiny_musicgen_config

    # Upstream's MusicGen needs max_duration > 18 s; a 640-sample hop (25 frames/s) keeps it cheap.
    lm_cfg = tiny_musicgen_config(str(encoder), segment_duration=18.5)
    lm_cfg["conditioners"] = {"description": {"model": "hf", "hf": {
        "name": str(encoder), "finetune": False, "word_dropout": 0.3, "normalize_text": False}}}
    codec_cfg = tiny_encodec_config(lm_cfg["sample_rate"], 1, n_q=4, card=lm_cfg["transformer_lm"]["card"],
                                    ratios=(8, 5, 4, 4))
    return lm_cfg, codec_cfg


def build_models(builders, lm_cfg: dict, codec_cfg: dict, seed: int):
    """(lm, codec) from either side's builders, with random weights peaky enough to matter."""
    from omegaconf import OmegaConf

    from audiocraft_patched.utils.tiny import randomize_weights

    torch.manual_seed(seed)
    lm = builders.get_lm_model(OmegaConf.create(copy.deepcopy(lm_cfg)))
    codec = builders.get_compression_model(OmegaConf.create(copy.deepcopy(codec_cfg)))
    randomize_weights(lm, codec, seed)
    return lm, codec


def measure(musicgen_cls, attributes_cls, folder: Path) -> dict:
    """Everything compared between the two sides, for the export in `folder`."""
    model = musicgen_cls.get_pretrained(str(folder), device="cpu")
    lm = model.lm
    provider = lm.condition_provider
    attributes = [attributes_cls(text={"description": t}) for t in TEXTS]
    codes = torch.randint(lm.card, (len(TEXTS), lm.num_codebooks, 12), generator=torch.Generator().manual_seed(1))
    out = {"conditioner": type(provider.conditioners["description"]).__module__,
           "conditioner_file": sys.modules[type(provider.conditioners["description"]).__module__].__file__,
           "state_keys": sorted(k for k in lm.state_dict() if k.startswith("condition_provider."))}
    with torch.no_grad():
        out["embeds"], out["mask"] = provider(provider.tokenize(attributes))["description"]
        out["logits"] = lm.compute_predictions(codes, attributes).logits
    model.set_generation_params(duration=0.3, use_sampling=False)
    out["greedy"] = model.generate(TEXTS[:2], return_tokens=True)[1]
    model.set_generation_params(duration=0.3, use_sampling=True, top_k=10)
    torch.manual_seed(7)
    out["wav"], out["sampled"] = model.generate(TEXTS[:2], return_tokens=True)
    return out


def upstream_side(job_file: str) -> None:
    """Subprocess: the patched upstream writes its own exports, then measures both sides' exports."""
    job = json.loads(Path(job_file).read_text())
    torch.set_num_threads(job["threads"])
    sys.path.insert(0, job["tests_dir"])
    from upstream import install_stubs

    install_stubs()
    import audiocraft
    from audiocraft.models import MusicGen, builders
    from audiocraft.modules.conditioners import ConditioningAttributes
    from audiocraft.utils.export import export_encodec, export_lm

    if not Path(audiocraft.__file__).is_relative_to(job["tree"]):
        raise RuntimeError(f"imported {audiocraft.__file__}, not the patched tree {job['tree']}")
    results = {}
    for name, case in job["cases"].items():
        lm_cfg, codec_cfg = hf_configs(Path(case["encoder"]))
        lm, codec = build_models(builders, lm_cfg, codec_cfg, seed=1)
        folder = Path(case["upstream_export"])
        # Upstream's own export functions, from training-checkpoint-shaped files.
        for model, cfg, export, filename in ((lm, lm_cfg, export_lm, "state_dict.bin"),
                                             (codec, codec_cfg, export_encodec, "compression_state_dict.bin")):
            training = folder.parent / f"{name}-{filename}.th"
            torch.save({"xp.cfg": cfg, "best_state": {"model": model.state_dict()}, "fsdp_best_state": None},
                       training)
            export(training, folder / filename)
        results[name] = {"ours": measure(MusicGen, ConditioningAttributes, Path(case["our_export"])),
                         "upstream": measure(MusicGen, ConditioningAttributes, folder)}
    import pytest as pytest_

    os.chdir(job["tree"])
    results["pytest"] = int(pytest_.main(["-q", "-p", "no:cacheprovider", UPSTREAM_TEST]))
    torch.save(results, job["out"])


if __name__ == "__main__":
    upstream_side(sys.argv[1])
    sys.exit(0)


@pytest.fixture(scope="module")
def patched_tree(tmp_path_factory) -> Path:
    from audiocraft_patched.patching import rebase
    from audiocraft_patched.patching.upstream import installed_tree

    tree = installed_tree(tmp_path_factory.mktemp("patched-upstream"), "1.3.0")
    report = rebase(tree, in_place=True)
    assert report.exit_code == 0, report.format()
    return tree


@pytest.fixture(scope="module")
def sides(patched_tree, tmp_path_factory):
    """{encoder: {'ours' / 'upstream' export: (measured by patched upstream, measured by us)}}."""
    from audiocraft_patched.models import MusicGen, builders
    from audiocraft_patched.modules.conditioners import ConditioningAttributes
    from audiocraft_patched.utils.tiny import make_tiny_t5, save_export

    tmp = tmp_path_factory.mktemp("cross")
    encoders = {"t5": make_tiny_t5(tmp / "t5"), "bert": make_tiny_bert(tmp / "bert")}
    cases = {}
    for name, encoder in encoders.items():
        lm_cfg, codec_cfg = hf_configs(encoder)
        lm, codec = build_models(builders, lm_cfg, codec_cfg, seed=0)
        save_export(tmp / f"ours-{name}" / "state_dict.bin", lm.state_dict(), lm_cfg)
        save_export(tmp / f"ours-{name}" / "compression_state_dict.bin", codec.state_dict(), codec_cfg)
        cases[name] = {"encoder": str(encoder), "our_export": str(tmp / f"ours-{name}"),
                       "upstream_export": str(tmp / f"upstream-{name}")}
    job = {"tree": str(patched_tree), "tests_dir": str(TESTS_DIR), "cases": cases, "out": str(tmp / "results.pt"),
           "threads": torch.get_num_threads()}
    (tmp / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(patched_tree), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, __file__, str(tmp / "job.json")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    theirs = torch.load(tmp / "results.pt", weights_only=True)
    mine = {name: {side: measure(MusicGen, ConditioningAttributes, Path(cases[name][key]))
                   for side, key in (("ours", "our_export"), ("upstream", "upstream_export"))}
            for name in encoders}
    return theirs, mine, run.stdout


CASES = [(encoder, side) for encoder in ENCODERS for side in ("ours", "upstream")]
IDS = [f"{encoder}-{side}-checkpoint" for encoder, side in CASES]


def test_patched_upstream_uses_the_generated_conditioner(sides, patched_tree):
    theirs, mine, _ = sides
    for encoder, side in CASES:
        assert theirs[encoder][side]["conditioner"] == "audiocraft.modules.hf_conditioner"
        assert Path(theirs[encoder][side]["conditioner_file"]).is_relative_to(patched_tree)
        # Same state-dict keys: the frozen encoder stays out of checkpoints on both sides.
        assert theirs[encoder][side]["state_keys"] == mine[encoder][side]["state_keys"] == [
            "condition_provider.conditioners.description.output_proj.bias",
            "condition_provider.conditioners.description.output_proj.weight"]


@pytest.mark.parametrize("encoder,side", CASES, ids=IDS)
def test_same_conditioning_and_logits(sides, encoder, side):
    theirs, mine = sides[0][encoder][side], sides[1][encoder][side]
    assert torch.equal(mine["mask"], theirs["mask"])
    assert not mine["mask"][1:3].any()  # None and "" are the null condition
    torch.testing.assert_close(mine["embeds"], theirs["embeds"], atol=1e-6, rtol=0)
    torch.testing.assert_close(mine["logits"], theirs["logits"], atol=1e-5, rtol=0, equal_nan=True)


@pytest.mark.parametrize("encoder,side", CASES, ids=IDS)
def test_same_generated_tokens_and_audio(sides, encoder, side):
    theirs, mine = sides[0][encoder][side], sides[1][encoder][side]
    assert mine["greedy"].shape == (2, 4, 7)  # 0.3 s at 25 frames/s, 4 codebooks
    assert torch.equal(mine["greedy"], theirs["greedy"])
    assert torch.equal(mine["sampled"], theirs["sampled"])
    torch.testing.assert_close(mine["wav"], theirs["wav"], atol=1e-5, rtol=0)


def test_checkpoints_differ_between_sides(sides):
    """The two exports hold different weights (seeds 0 and 1), so loading the wrong one would show."""
    for encoder in ENCODERS:
        assert not torch.equal(sides[1][encoder]["ours"]["logits"], sides[1][encoder]["upstream"]["logits"])


def test_series_upstream_test_file_passes(sides):
    theirs, _, stdout = sides
    assert theirs["pytest"] == 0, stdout[-3000:]
    assert "5 passed" in stdout
