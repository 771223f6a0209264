"""Quantized MusicGen: API, checkpoint save/load (weights_only), inspect, CLI, and quality on the world model."""
import pytest
import torch

from audiocraft_patched import cli
from audiocraft_patched.models import MusicGen
from audiocraft_patched.models.loaders import LM_FILE, CheckpointError
from audiocraft_patched.modules.weight_quant import QuantizedWeight, quantization_of
from audiocraft_patched.quantize import describe_quantization, save_quantized


def greedy_tokens(model, seed=0):
    model.set_generation_params(duration=0.4, use_sampling=False, cfg_coef=3.0)
    torch.manual_seed(seed)
    return model.generate(["calm piano", "fast drums"], return_tokens=True)[1]


@pytest.mark.parametrize("mode,group", [("int8", 128), ("int4", 16), ("w8a8", 128), ("int8-dynamic", 128)])
def test_quantized_checkpoint_saves_loads_and_generates_the_same_tokens(tiny_musicgen_dir, tmp_path, mode, group):
    model = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu").quantize(mode, group_size=group)
    assert quantization_of(model.lm.transformer) == {"mode": mode, "group_size": group}
    tokens = greedy_tokens(model)
    sizes = save_quantized(model, tmp_path / "q")
    assert set(sizes) == {LM_FILE, "compression_state_dict.bin"} and all(s > 0 for s in sizes.values())
    pkg = torch.load(tmp_path / "q" / LM_FILE, weights_only=True)
    assert pkg["best_state"]["transformer.layers.0.linear1.weight.qweight"].dtype == \
        (torch.uint8 if mode == "int4" else torch.int8)
    loaded = MusicGen.get_pretrained(str(tmp_path / "q"), device="cpu")
    assert isinstance(loaded.lm.transformer.layers[0].self_attn.in_proj_weight, QuantizedWeight)
    assert torch.equal(greedy_tokens(loaded), tokens)
    assert describe_quantization(loaded.lm).startswith(mode)
    with pytest.raises(FileExistsError, match="overwrite"):
        save_quantized(model, tmp_path / "q")


def test_quantized_logits_stay_close_and_errors_are_clear(tiny_musicgen_dir, tmp_path):
    dense = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")
    with pytest.raises(ValueError, match="not quantized"):
        save_quantized(dense, tmp_path / "x")
    quantized = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu").quantize("int8")
    codes = torch.randint(0, dense.lm.card, (1, dense.lm.num_codebooks, 6), generator=torch.Generator().manual_seed(0))
    from audiocraft_patched.modules.conditioners import ConditioningAttributes

    attrs = [ConditioningAttributes(text={"description": "calm piano"})]
    with torch.no_grad():
        ref, got = (m.lm(codes, attrs) for m in (dense, quantized))
    assert (got - ref).abs().max() < 0.02 * ref.abs().max()  # int8 per channel: ~0.4% of each weight's range
    w8a8 = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu").quantize("w8a8")
    with torch.no_grad():
        both = w8a8.lm(codes, attrs)
    assert (both - ref).abs().max() < 0.04 * ref.abs().max()  # and each product's input rounded per row
    dynamic = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu").quantize("int8-dynamic")
    with torch.no_grad():
        both = dynamic.lm(codes, attrs)
    assert (both - ref).abs().max() < 0.04 * ref.abs().max()  # or per product input, in 7 bits
    with pytest.raises(ValueError, match="already quantized"):
        quantized.quantize("int4")
    with pytest.raises(ValueError, match="group_size 48 does not divide"):
        dense.quantize("int4", group_size=48)
    assert quantization_of(dense.lm.transformer) is None  # the failed call changed nothing


def test_corrupt_quantize_entry_is_a_checkpoint_error(tiny_musicgen_dir, tmp_path):
    model = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu").quantize("int8")
    save_quantized(model, tmp_path / "q")
    pkg = torch.load(tmp_path / "q" / LM_FILE, weights_only=True)
    pkg["xp.cfg"] = pkg["xp.cfg"].replace("mode: int8", "mode: int3")
    torch.save(pkg, tmp_path / "q" / LM_FILE)
    with pytest.raises(CheckpointError, match="'int3' is not supported"):
        MusicGen.get_pretrained(str(tmp_path / "q"), device="cpu")


def test_cli_generate_quantize_and_inspect(tiny_musicgen_dir, tmp_path, capsys):
    out = tmp_path / "a.wav"
    assert cli.main(["generate", str(tiny_musicgen_dir), "calm piano", "--duration", "0.4", "--quantize", "int8",
                     "--seed", "1", "-q", "-o", str(out)]) == 0
    assert out.stat().st_size > 44
    model = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu").quantize("int8")
    save_quantized(model, tmp_path / "q")
    capsys.readouterr()
    assert cli.main(["inspect", str(tmp_path / "q")]) == 0
    assert "LM weights: int8 (per output channel), transformer linear weights" in capsys.readouterr().out


# The proving table's protocol (world/evaluate.py), sized for CI: 16 held-out captions, 2 s clips.
# Measured on the shipped default at that size (F.linear forced, AMD EPYC): fp32 0.938, bf16 0.963,
# int8 0.912, int4 0.875, w8a8 0.938, int8-dynamic 0.950; the sampled clips differ once any weight
# does, so 80 judgements carry about +-0.04 of noise (a difference of two such scores, +-0.06) and
# 0.03 cannot be asserted honestly at this size: 0.08 is. With the full protocol (48 captions, 5 s clips) the
# spread is within 0.03 of fp32 (README, "Quantization").
def test_world_model_adherence_of_every_quantization_and_bf16_near_fp32(monkeypatch):
    from audiocraft_patched.world.analyze import chance_adherence
    from audiocraft_patched.world.evaluate import evaluate

    monkeypatch.setenv("AUDIOCRAFT_PATCHED_MATMUL", "linear")  # the same form whatever the machine's load
    scores = {}
    for mode in ("fp32", "bf16", "int8", "int4", "w8a8", "int8-dynamic"):
        model = MusicGen.get_pretrained("default", device="cpu")
        if mode == "bf16":
            model.set_dtype("bf16")
        elif mode != "fp32":
            model.quantize(mode)
        scores[mode] = evaluate(model, n=16, seconds=2.0)["mean"]
    assert scores["fp32"] > chance_adherence() + 0.3, scores
    for mode in ("bf16", "int8", "int4", "w8a8", "int8-dynamic"):
        assert abs(scores[mode] - scores["fp32"]) <= 0.08, scores


def test_include_text_encoder_quantizes_its_linears(tiny_musicgen_dir):
    from audiocraft_patched.modules.weight_quant import QuantizedLinear

    model = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu").quantize("int8", include_text_encoder=True)
    encoder = model.lm.condition_provider.conditioners["description"].encoder
    assert any(isinstance(m, QuantizedLinear) for m in encoder.modules())
    assert not any(isinstance(m, torch.nn.Linear) for m in encoder.modules())
    assert greedy_tokens(model).shape == (2, 4, 10)
