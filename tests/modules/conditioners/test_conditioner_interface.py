"""The conditioner interface: config() rebuilds an equal conditioner, forward = project(encode), describe()."""
import pytest
import torch

from audiocraft_patched.modules.conditioners import (
    ENCODERS,
    ConditionFuser,
    HFAdapterConditioner,
    HFEncoderConditioner,
    LUTConditioner,
    build_conditioner,
    register_encoder,
)

TEXTS = ["calm piano", None, "a loud fast trumpet melody in a high register"]


def rebuilt(cond, output_dim):
    entry = cond.config()
    return build_conditioner(entry["model"], output_dim, device="cpu", **entry[entry["model"]])


def test_lut_config_round_trip_and_forward_is_encode_then_project():
    torch.manual_seed(0)
    cond = LUTConditioner(n_bins=16, dim=8, output_dim=4)
    assert cond.config() == {"model": "lut", "lut": {"n_bins": 16, "dim": 8, "tokenizer": "noop", "pad_idx": 0}}
    again = rebuilt(cond, 4)
    again.load_state_dict(cond.state_dict())
    inputs = cond.tokenize(TEXTS)
    out, mask = cond(inputs)
    torch.testing.assert_close(again(again.tokenize(TEXTS))[0], out, rtol=0, atol=0)
    by_parts, parts_mask = cond.project(*cond.encode(inputs))
    assert torch.equal(by_parts, out) and torch.equal(parts_mask, mask)
    assert mask.tolist() == [[1], [0], [1]] and not out[1].any()  # None: the null condition
    assert cond.describe() == {"source": "LUTConditioner", "summary": "LUTConditioner, width 8",
                               "projection": "Linear(8 -> 4)"}


@pytest.mark.parametrize("cls, extra", [(HFEncoderConditioner, {}),
                                        (HFAdapterConditioner, {"adapter": {"kind": "mlp", "hidden": 12}})])
def test_hf_config_round_trip_rebuilds_an_equal_conditioner(tiny_t5_dir, cls, extra):
    torch.manual_seed(0)
    cond = cls(str(tiny_t5_dir), output_dim=16, pooling="mean", layer=1, max_length=40,
               prompt_template="music: {}", word_dropout=0.1, **extra).eval()
    entry = cond.config()
    assert entry["model"] == cls.config_name and ENCODERS[entry["model"]] is cls
    options = entry[entry["model"]]
    assert options["max_length"] == 40 and options["prompt_template"] == "music: {}" and options["dtype"] == "float32"
    again = rebuilt(cond, 16).eval()
    assert again.config() == entry
    again.load_state_dict(cond.state_dict())  # strict: the same parameters (projection, adapter)
    with torch.no_grad():
        expected, mask = cond(cond.tokenize(TEXTS))
        got, again_mask = again(again.tokenize(TEXTS))
        parts = cond.project(*cond.encode(cond.tokenize(TEXTS)))[0]
    assert torch.equal(got, expected) and torch.equal(again_mask, mask) and torch.equal(parts, expected)
    about = cond.describe()
    assert about["source"] == str(tiny_t5_dir) and "T5EncoderModel" in about["summary"]
    assert "pooling mean, layer 1" in about["summary"] and "template 'music: {}'" in about["summary"]


def test_set_dtype_casts_the_frozen_encoder(tiny_t5_dir):
    cond = HFEncoderConditioner(str(tiny_t5_dir), output_dim=16)
    cond.set_dtype(torch.bfloat16)
    assert cond.output_proj.weight.dtype == torch.bfloat16
    assert next(cond.encoder.parameters()).dtype == torch.bfloat16
    assert cond.config()["hf"]["dtype"] == "bfloat16"
    assert list(cond.state_dict()) == ["output_proj.weight", "output_proj.bias"]  # still frozen, out of checkpoints


def test_fuser_add_and_config():
    fuser = ConditionFuser({"cross": ["description"]}, cross_attention_pos_emb=True)
    fuser.add("image")
    fuser.add("bias", "sum")
    assert fuser.cond2fuse == {"description": "cross", "image": "cross", "bias": "sum"}
    assert fuser.config() == {"sum": ["bias"], "prepend": [], "cross": ["description", "image"],
                              "input_interpolate": [], "cross_attention_pos_emb": True,
                              "cross_attention_pos_emb_scale": 1.0}
    with pytest.raises(ValueError, match="already fused"):
        fuser.add("image", "prepend")
    with pytest.raises(ValueError, match="fuse method must be one of"):
        fuser.add("other", "concat")


def test_registry_names_and_errors():
    with pytest.raises(KeyError, match="already registered"):
        register_encoder("lut")(type("Other", (LUTConditioner,), {}))
    with pytest.raises(KeyError, match="unknown conditioner 'nope'"):
        build_conditioner("nope", 4)
    assert ENCODERS["t5"] is ENCODERS["hf"] and ENCODERS["hf"].config_name == "hf"


def test_every_registered_conditioner_takes_device():
    """Builders pass `device` to every conditioner (as upstream), without probing constructors."""
    import inspect

    for name, cls in ENCODERS.items():
        assert "device" in inspect.signature(cls.__init__).parameters, name
    cond = build_conditioner("lut", 4, n_bins=8, dim=4, device="cpu")
    assert cond.embed.weight.device.type == "cpu"
