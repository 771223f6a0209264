"""EnCodec: parity with upstream audiocraft 1.3.0 checkpoints both ways, and input checks.

The parity tests build tiny models from upstream's `config/model/encodec/default.yaml` (values
below, shrunk), give them random weights and k-means codebooks, and go through the release
file format (`compression_state_dict.bin`: `best_state` + `xp.cfg` YAML) in both directions.
"""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from audiocraft_patched.models.encodec import (EncodecModel, InterleaveStereoCompressionModel,
                                               build_compression_model, get_debug_compression_model,
                                               wrap_compression_model)
from audiocraft_patched.modules.conv import StreamableConvTranspose1d, WeightNormConv1d
from upstream import import_upstream

# Upstream builds its convs with the deprecated torch.nn.utils.weight_norm.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")

# Upstream's config/model/encodec/default.yaml with its interpolations, shrunk (n_filters,
# dimension, ratios, n_q, bins).
DEFAULT_CFG = {
    "compression_model": "encodec",
    "encodec": {"autoencoder": "seanet", "quantizer": "rvq", "sample_rate": "${sample_rate}",
                "channels": "${channels}", "causal": False, "renormalize": False},
    "seanet": {"dimension": 16, "channels": "${channels}", "causal": "${encodec.causal}", "n_filters": 4,
               "n_residual_layers": 1, "ratios": [4, 4, 2], "activation": "ELU",
               "activation_params": {"alpha": 1.0}, "norm": "weight_norm", "norm_params": {},
               "kernel_size": 7, "residual_kernel_size": 3, "last_kernel_size": 7, "dilation_base": 2,
               "pad_mode": "constant", "true_skip": True, "compress": 2, "lstm": 2,
               "disable_norm_outer_blocks": 0,
               "decoder": {"trim_right_ratio": 1.0, "final_activation": None, "final_activation_params": None},
               "encoder": {}},
    "rvq": {"n_q": 4, "q_dropout": False, "bins": 64, "decay": 0.99, "kmeans_init": True, "kmeans_iters": 50,
            "threshold_ema_dead_code": 2, "orthogonal_reg_weight": 0.0, "orthogonal_reg_active_codes_only": False},
    "no_quant": {},
    "sample_rate": 16000,
    "channels": 1,
    "device": "cpu",
}

VARIANTS = {
    "default": {},
    # encodec_base_causal.yaml, plus an encoder-only override and a split trim.
    "causal": {"encodec": {"causal": True}, "sample_rate": 32000,
               "seanet": {"ratios": [8, 5, 4, 2], "encoder": {"n_residual_layers": 2},
                          "decoder": {"trim_right_ratio": 0.5}},
               "rvq": {"n_q": 8, "bins": 32, "q_dropout": True}},
    # Every other option the builders pass on; odd stride 3 pads asymmetrically.
    "options": {"encodec": {"renormalize": True},
                "seanet": {"ratios": [3, 2], "pad_mode": "reflect", "norm": "time_group_norm",
                           "norm_params": {"eps": 1e-3}, "true_skip": False, "disable_norm_outer_blocks": 1,
                           "lstm": 0, "n_residual_layers": 2, "dilation_base": 3, "compress": 1,
                           "activation": "CELU", "activation_params": {"alpha": 0.5},
                           "kernel_size": 5, "last_kernel_size": 3, "residual_kernel_size": 5,
                           "decoder": {"final_activation": "Tanh"}}},
}


def make_cfg(overrides: dict):
    return OmegaConf.merge(OmegaConf.create(DEFAULT_CFG), overrides)


def perturb_(model: torch.nn.Module) -> None:
    """Move every weight off its init (weight_g off ||weight_v||, GroupNorm off 1 and 0)."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5 + torch.rand_like(p)).add_(0.02 * torch.randn_like(p))


def upstream_model(cfg, seed: int = 0):
    """Upstream's model from its builder: random weights, codebooks from its own k-means."""
    from audiocraft.models import builders
    torch.manual_seed(seed)
    model = builders.get_compression_model(cfg)
    perturb_(model)
    with torch.no_grad():  # one training step of the quantizer runs k-means and sets `inited`
        model.quantizer.train()(model.encoder(torch.randn(2, model.channels, 4000)), model.frame_rate)
    return model.eval()


def export_upstream(model, cfg, tmp_path):
    """Upstream's `export_encodec` on a solver-style checkpoint; returns the release file."""
    from audiocraft.utils.export import export_encodec
    ckpt = tmp_path / "checkpoint.th"
    # A plain container rather than a DictConfig, which torch.load(weights_only=True) refuses.
    torch.save({"best_state": {"model": model.state_dict()}, "xp.cfg": OmegaConf.to_container(cfg)}, ckpt)
    return export_encodec(ckpt, tmp_path / "compression_state_dict.bin")


def load_ours(path) -> EncodecModel:
    """What our loaders do with a release file."""
    pkg = torch.load(path, weights_only=True)
    cfg = OmegaConf.to_container(OmegaConf.create(pkg["xp.cfg"]), resolve=True)
    cfg["device"] = "cpu"
    model = build_compression_model(cfg)
    model.load_state_dict(pkg["best_state"])
    return model.eval()


def assert_same_coding(ours, theirs, channels: int, length: int, seed: int = 1) -> None:
    """Equal codes and scale from `encode`, equal audio from `decode` of them and of random codes."""
    gen = torch.Generator().manual_seed(seed)
    x = 0.5 * torch.randn(2, channels, length, generator=gen)
    with torch.no_grad():
        codes, scale = ours.encode(x)
        ref_codes, ref_scale = theirs.encode(x)
        assert codes.shape[1] == theirs.num_codebooks and codes.unique().numel() > 8
        torch.testing.assert_close(codes, ref_codes, rtol=0, atol=0)
        torch.testing.assert_close(scale, ref_scale, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.decode(codes, scale), theirs.decode(ref_codes, ref_scale), rtol=0, atol=1e-6)
        random_codes = torch.randint(0, theirs.cardinality, codes.shape, generator=gen)
        torch.testing.assert_close(ours.decode(random_codes), theirs.decode(random_codes), rtol=0, atol=1e-6)


@pytest.mark.upstream
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_upstream_checkpoint_loads_with_same_outputs(variant, tmp_path):
    import_upstream()
    cfg = make_cfg(VARIANTS[variant])
    theirs = upstream_model(cfg)
    ours = load_ours(export_upstream(theirs, cfg, tmp_path))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert (ours.frame_rate, ours.sample_rate, ours.cardinality) == (theirs.frame_rate, theirs.sample_rate,
                                                                     theirs.cardinality)
    assert_same_coding(ours, theirs, channels=1, length=cfg.sample_rate // 5 + 7)


@pytest.mark.upstream
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_our_checkpoint_loads_in_upstream_with_same_outputs(variant, tmp_path):
    audiocraft = import_upstream()
    from audiocraft.models.loaders import load_compression_model
    cfg = make_cfg(VARIANTS[variant])
    torch.manual_seed(0)
    ours = build_compression_model(OmegaConf.to_container(cfg, resolve=True))
    perturb_(ours)
    with torch.no_grad():  # codebooks at the scale of the latents, so that codes vary
        scale = ours.encoder(torch.randn(2, 1, 4000)).std()
        for layer in ours.quantizer.vq.layers:
            layer._codebook.embed.normal_(0, scale.item())
    path = tmp_path / "compression_state_dict.bin"
    torch.save({"best_state": ours.state_dict(), "xp.cfg": OmegaConf.to_yaml(cfg),
                "version": audiocraft.__version__, "exported": True}, path)
    theirs = load_compression_model(path)  # strict load_state_dict
    assert_same_coding(ours.eval(), theirs, channels=1, length=cfg.sample_rate // 5 + 3)


@pytest.mark.upstream
@pytest.mark.parametrize("per_timestep, n_q", [(False, None), (True, 3)])
def test_stereo_interleaved_matches_upstream(per_timestep, n_q, tmp_path):
    import_upstream()
    from audiocraft.models.builders import get_wrapped_compression_model
    cfg = make_cfg({})
    mono = upstream_model(cfg)
    ours = load_ours(export_upstream(mono, cfg, tmp_path))
    # The part of a musicgen-stereo LM config that concerns the compression model.
    lm_cfg = {"interleave_stereo_codebooks": {"use": True, "per_timestep": per_timestep},
              "compression_model_n_q": n_q}
    theirs = get_wrapped_compression_model(mono, OmegaConf.create(lm_cfg))
    ours = wrap_compression_model(ours, lm_cfg)
    assert isinstance(ours, InterleaveStereoCompressionModel)
    assert (ours.num_codebooks, ours.total_codebooks, ours.frame_rate, ours.channels) == (
        theirs.num_codebooks, theirs.total_codebooks, theirs.frame_rate, theirs.channels)
    assert_same_coding(ours, theirs, channels=2, length=3001)


@pytest.mark.upstream
def test_debug_model_matches_upstream():
    import_upstream()
    from audiocraft.models.builders import get_debug_compression_model as upstream_debug_model
    torch.manual_seed(0)
    theirs = upstream_debug_model(sample_rate=16000)
    ours = get_debug_compression_model(sample_rate=16000)
    ours.load_state_dict(theirs.state_dict())
    assert_same_coding(ours, theirs, channels=1, length=16000)


@pytest.mark.upstream
def test_no_quant_matches_upstream(tmp_path):
    import_upstream()
    from audiocraft.models import builders
    cfg = make_cfg({"encodec": {"quantizer": "no_quant"}})
    torch.manual_seed(0)
    theirs = builders.get_compression_model(cfg).eval()
    ours = load_ours(export_upstream(theirs, cfg, tmp_path))
    x = torch.randn(1, 1, 1000)
    with torch.no_grad():
        latent, _ = ours.encode(x)
        assert latent.shape == (1, 1, 16, 32)
        torch.testing.assert_close(latent, theirs.encode(x)[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.decode(latent), theirs.decode(latent), rtol=0, atol=1e-6)


@pytest.mark.parametrize("api", ["old", "parametrizations"])
def test_weight_norm_loads_both_key_layouts(api):
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(3, 5, 4, stride=2)
    if api == "old":
        with pytest.warns(FutureWarning):  # deprecated, but what upstream uses
            ref = torch.nn.utils.weight_norm(conv)
    else:
        ref = torch.nn.utils.parametrizations.weight_norm(conv)
    magnitude = ref.weight_g if api == "old" else ref.parametrizations.weight.original0
    with torch.no_grad():
        magnitude.mul_(1.5)
    ours = WeightNormConv1d(3, 5, 4, stride=2)
    ours.load_state_dict(ref.state_dict())
    assert list(ours.state_dict()) == ["bias", "weight_g", "weight_v"]
    x = torch.randn(2, 3, 20)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


@pytest.fixture(scope="module")
def debug_model() -> EncodecModel:
    torch.manual_seed(0)
    return get_debug_compression_model(sample_rate=16000)


def test_debug_model_shapes(debug_model):
    assert (debug_model.frame_rate, debug_model.cardinality, debug_model.num_codebooks) == (25, 400, 4)
    with torch.no_grad():
        codes, scale = debug_model.encode(torch.randn(2, 1, 16000))
        assert codes.shape == (2, 4, 25) and codes.dtype == torch.int64 and scale is None
        assert debug_model.decode(codes).shape == (2, 1, 16000)
    with pytest.raises(ValueError, match="debug compression model"):
        get_debug_compression_model(sample_rate=44100)


def test_bad_inputs_give_clear_errors(debug_model):
    codes = torch.zeros(1, 4, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"codes \[B, K, T\]"):
        debug_model.decode(codes[0])
    with pytest.raises(ValueError, match="1 <= K <= 4"):
        debug_model.decode(torch.zeros(1, 5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        debug_model.decode(codes.float())
    with pytest.raises(ValueError, match=r"audio \[B, 1, S\]"):
        debug_model.encode(torch.zeros(1, 100))
    with pytest.raises(ValueError, match=r"audio \[B, 1, S\]"):
        debug_model.encode(torch.zeros(1, 2, 100))
    with pytest.raises(ValueError, match=r"in \[1, 4\]"):
        debug_model.set_num_codebooks(5)
    with pytest.raises(ValueError, match="does not renormalize"):
        debug_model.decode(codes, torch.ones(1, 1))
    stereo = InterleaveStereoCompressionModel(debug_model)
    with pytest.raises(ValueError, match="8 codebooks"):
        stereo.decode(codes)
    with pytest.raises(ValueError, match="must be mono"):
        InterleaveStereoCompressionModel(stereo)
    with pytest.raises(ValueError, match="only makes sense for causal"):
        StreamableConvTranspose1d(2, 2, 4, 2, trim_right_ratio=0.5)


def test_fewer_codebooks(debug_model):
    model = get_debug_compression_model(sample_rate=16000)
    model.load_state_dict(debug_model.state_dict())
    model.set_num_codebooks(2)
    x = torch.randn(1, 1, 1600)
    with torch.no_grad():
        codes, _ = model.encode(x)
        assert codes.shape == (1, 2, 3)  # ceil(1600 / 640)
        torch.testing.assert_close(codes, debug_model.encode(x)[0][:, :2], rtol=0, atol=0)


def test_build_config_errors_and_no_mutation():
    cfg = OmegaConf.to_container(make_cfg(VARIANTS["causal"]), resolve=True)
    snapshot = OmegaConf.to_yaml(cfg)
    model = build_compression_model(cfg)
    assert OmegaConf.to_yaml(cfg) == snapshot
    assert (model.causal, model.frame_rate, model.total_codebooks) == (True, 100, 8)
    with pytest.raises(ValueError, match="'dac' is not supported: only 'encodec'"):
        build_compression_model({**cfg, "compression_model": "dac"})
    with pytest.raises(ValueError, match="encodec.quantizer 'lfq' is not supported"):
        build_compression_model({**cfg, "encodec": {**cfg["encodec"], "quantizer": "lfq"}})
    with pytest.raises(TypeError, match="kmeans_inits"):
        build_compression_model({**cfg, "rvq": {**cfg["rvq"], "kmeans_inits": 3}})
    with pytest.raises(ValueError, match="renormalize"):
        build_compression_model({**cfg, "encodec": {**cfg["encodec"], "renormalize": True}})


def test_stereo_renormalize_scales_each_channel():
    # Upstream slices the scales by batch item here (`scale[0]`); we pass each channel its own.
    cfg = OmegaConf.to_container(make_cfg(VARIANTS["options"]), resolve=True)
    torch.manual_seed(0)
    mono = build_compression_model(cfg).eval()
    stereo = InterleaveStereoCompressionModel(mono)
    x = torch.randn(3, 2, 500) * torch.tensor([[[0.1], [2.0]]])
    with torch.no_grad():
        codes, scales = stereo.encode(x)
        assert scales.shape == (3, 2, 1)
        left = mono.decode(*mono.encode(x[:, :1]))
        torch.testing.assert_close(stereo.decode(codes, scales)[:, :1], left, rtol=0, atol=0)
