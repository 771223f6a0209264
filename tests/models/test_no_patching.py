"""Nothing is patched at run time: loading skips random init through an argument; the provider times itself."""
import torch
from torch import nn

from audiocraft_patched.models import MusicGen, builders
from audiocraft_patched.models.lm import LMModel
from audiocraft_patched.modules.conditioners import ConditioningAttributes

ORIGINALS = {(nn.Linear, "reset_parameters"): nn.Linear.reset_parameters,
             (nn.Embedding, "reset_parameters"): nn.Embedding.reset_parameters,
             (nn.LayerNorm, "reset_parameters"): nn.LayerNorm.reset_parameters,
             (nn.modules.conv._ConvNd, "reset_parameters"): nn.modules.conv._ConvNd.reset_parameters,
             (LMModel, "_init_weights"): LMModel._init_weights}


def unpatched() -> bool:
    return all(cls.__dict__[name] is fn for (cls, name), fn in ORIGINALS.items())


def test_loading_patches_no_method_and_leaves_the_rng_alone(tiny_musicgen_dir, monkeypatch):
    seen = []

    class SpyLM(LMModel):
        def __init__(self, *args, **kwargs):
            seen.append(("lm", unpatched(), kwargs["init_weights"]))
            super().__init__(*args, **kwargs)

    build = builders.build_compression_model

    def spy_codec(cfg):
        seen.append(("codec", unpatched(), cfg["device"]))
        return build(cfg)

    monkeypatch.setattr(builders, "LMModel", SpyLM)
    monkeypatch.setattr(builders, "build_compression_model", spy_codec)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    model = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")
    assert seen == [("lm", True, False), ("codec", True, "meta")]
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.device.type == "cpu" for p in [*model.lm.parameters(), *model.compression_model.parameters()])


def test_uninitialised_build_then_load_equals_a_normal_build(tiny_musicgen_dir):
    from audiocraft_patched.models.loaders import load_checkpoint, lm_config

    pkg = load_checkpoint(tiny_musicgen_dir / "state_dict.bin")
    cfg = lm_config(pkg, tiny_musicgen_dir / "state_dict.bin")
    torch.manual_seed(0)
    normal = builders.get_lm_model(cfg)
    empty = builders.get_lm_model(cfg, init_weights=False)
    assert set(normal.state_dict()) == set(empty.state_dict())
    for module in (normal, empty):
        module.load_state_dict(pkg["best_state"])
    codes = torch.randint(0, 64, (1, 4, 6))
    text = [ConditioningAttributes(text={"description": "calm piano"})]
    with torch.no_grad():
        expected = normal.eval().compute_predictions(codes, text).logits
        assert torch.equal(empty.eval().compute_predictions(codes, text).logits.nan_to_num(), expected.nan_to_num())


def test_generation_swaps_no_method_and_the_provider_times_itself(tiny_musicgen_dir):
    model = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")
    model.set_generation_params(duration=0.1)
    model.generate(["calm piano", None])
    lm = model.lm
    assert "condition_tensors" not in lm.__dict__  # the class's method, never an instance attribute
    assert all(not c._forward_hooks and not c._forward_pre_hooks for c in lm.condition_provider.conditioners.values())
    timings = lm.condition_provider.timings
    assert set(timings) == {"tokenize", "description"} and all(t > 0 for t in timings.values())
    assert model.timings["conditioning"] == sum(timings.values())
    assert model.timings["conditioning.description"] == timings["description"]
