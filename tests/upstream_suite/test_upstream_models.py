"""Our tests of what upstream 1.3.0's model-level tests check (tests/models, tests/quantization).

Those files are not in the sdist; these tests check the same behaviours in our own words, with
the numbers that matter: shapes, straight-through gradients, losses, bandwidth, and upstream's
exception classes.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

from audiocraft_patched.models import EncodecModel, MusicGen
from audiocraft_patched.modules import SEANetDecoder, SEANetEncoder, StreamingTransformer
from audiocraft_patched.modules.errors import ValueAssertionError
from audiocraft_patched.quantization import DummyQuantizer, QuantizedResult, ResidualVectorQuantizer


def test_value_assertion_error_is_both_classes():
    err = ValueAssertionError("x")
    assert isinstance(err, ValueError) and isinstance(err, AssertionError)


@pytest.fixture(scope="module")
def debug_musicgen() -> MusicGen:
    model = MusicGen.get_pretrained("debug", device="cpu")
    model.set_generation_params(duration=0.4, extend_stride=2.0)
    return model


def test_debug_musicgen_shapes_and_upstream_errors(debug_musicgen):
    mg = debug_musicgen
    assert (mg.frame_rate, mg.sample_rate, mg.audio_channels) == (25, 32000, 1)
    torch.manual_seed(0)
    assert list(mg.generate_unconditional(2).shape) == [2, 1, 12800]
    assert list(mg.generate(["youpi", "lapin dort"]).shape) == [2, 1, 12800]
    prompt = torch.randn(2, 1, 3200)
    assert list(mg.generate_continuation(prompt, 32000, ["a", "b"]).shape) == [2, 1, 12800]
    # Upstream asserts here: code catching AssertionError (upstream's tests) keeps working.
    for caught in (AssertionError, ValueError):
        with pytest.raises(caught, match="3 descriptions for 2 prompts"):
            mg.generate_continuation(prompt, 32000, ["a", "b", "one too many"])


def test_debug_musicgen_past_max_duration(debug_musicgen):
    mg = debug_musicgen
    old = mg.max_duration
    try:
        mg.max_duration = 0.4
        mg.set_generation_params(duration=0.8, extend_stride=0.2)
        torch.manual_seed(0)
        assert list(mg.generate(["youpi"]).shape) == [1, 1, 25600]
    finally:
        mg.max_duration = old
        mg.set_generation_params(duration=0.4, extend_stride=2.0)


def _encodec(quantizer, renormalize: bool = False) -> EncodecModel:
    ratios = [5, 4, 3, 2]
    encoder = SEANetEncoder(channels=1, dimension=5, n_filters=3, n_residual_layers=1, ratios=ratios)
    decoder = SEANetDecoder(channels=1, dimension=5, n_filters=3, n_residual_layers=1, ratios=ratios)
    return EncodecModel(encoder, decoder, quantizer, frame_rate=24_000 // 120, sample_rate=24_000, channels=1,
                        renormalize=renormalize)


@pytest.mark.parametrize("length", [1, 119, 121, 2000])
def test_encodec_forward_round_trip_keeps_length(length):
    torch.manual_seed(0)
    model = _encodec(DummyQuantizer())
    x = torch.randn(2, 1, length)
    res = model(x)
    assert isinstance(res, QuantizedResult)
    assert res.x.shape == x.shape
    frames = math.ceil(length / 120)
    assert res.codes.shape == (2, 1, 5, frames)
    # 32 bits per latent value, 5 values per frame at 200 frames/s: 32 kb/s.
    assert res.bandwidth.item() == pytest.approx(5 * frames * 32 * 200 / 1000)


def test_encodec_forward_with_rvq_and_renormalize():
    torch.manual_seed(0)
    model = _encodec(ResidualVectorQuantizer(dimension=5, n_q=4, bins=16), renormalize=True)
    x = 3.0 * torch.randn(2, 1, 1000)
    res = model(x)
    assert res.x.shape == x.shape and res.codes.shape == (2, 4, 9)
    assert res.bandwidth.item() == pytest.approx(4 * 4 * 200 / 1000)  # n_q * log2(bins) * frame_rate
    assert res.penalty.item() > 0
    _, scale = model.encode(x)
    assert scale is not None and scale.shape == (2, 1)


def test_rvq_training_forward_is_straight_through_and_learns():
    torch.manual_seed(0)
    x = torch.randn(1, 16, 512, requires_grad=True)
    vq = ResidualVectorQuantizer(n_q=8, dimension=16, bins=8)
    assert vq.vq.layers[0]._codebook.inited.item() == 0  # k-means init, upstream's default
    res = vq(x, 1.0)
    assert res.x.shape == x.shape and res.codes.shape == (1, 8, 512)
    assert res.bandwidth.item() == pytest.approx(8 * 3 / 1000)
    res.x.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # straight-through: d(sum)/dx = 1
    assert all(layer._codebook.inited.item() == 1 for layer in vq.vq.layers)
    # The commitment loss is the mean over stages of each stage's residual-to-entry distance.
    vq.eval()
    with torch.no_grad():
        res = vq(x, 1.0)
        residual, losses = x.detach(), []
        for layer in vq.vq.layers:
            quantized = layer.decode(layer.encode(residual))
            losses.append(((quantized - residual) ** 2).mean())
            residual = residual - quantized
        assert torch.allclose(res.x, x - residual, atol=1e-5)
        assert torch.equal(res.codes, vq.encode(x))
    assert res.penalty.item() == 0.0  # eval: no loss, as upstream
    vq.train()
    assert vq(x.detach(), 1.0).penalty.item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)


def test_rvq_eval_forward_leaves_codebooks_alone():
    torch.manual_seed(0)
    vq = ResidualVectorQuantizer(n_q=2, dimension=4, bins=4, kmeans_init=False).eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(2, 4, 10), 50)
    assert all(torch.equal(before[k], v) for k, v in vq.state_dict().items())


def test_streaming_in_uneven_chunks_equals_one_pass():
    torch.manual_seed(0)
    for past_context in (None, 3):
        tr = StreamingTransformer(16, 4, 2, causal=True, past_context=past_context, dropout=0.0).eval()
        x = torch.randn(2, 9, 16)
        with torch.no_grad():
            full = tr(x)
            with tr.streaming():
                chunks = [tr(x[:, a:b]) for a, b in ((0, 2), (2, 3), (3, 7), (7, 9))]
                state = tr.get_streaming_state()
                assert int(state["offset"]) == 9 and state["0.past_keys"].shape == (2, 4, 9, 4)
        assert torch.allclose(torch.cat(chunks, dim=1), full, atol=1e-5)
    with pytest.raises(RuntimeError, match="streaming"):
        tr.get_streaming_state()  # only inside `with tr.streaming():`


def test_kv_repeat_shares_each_key_head_between_query_heads():
    from audiocraft_patched.modules.transformer import StreamingMultiheadAttention

    torch.manual_seed(0)
    mha = StreamingMultiheadAttention(16, 4, causal=True, kv_repeat=2, custom=True).eval()
    assert mha.in_proj_weight.shape == (16 + 2 * 8, 16)
    x = torch.randn(1, 5, 16)
    y, _ = mha(x, x, x)
    q, k, v = (x @ mha.in_proj_weight.T).split([16, 8, 8], dim=-1)
    q = q.view(1, 5, 4, 4).transpose(1, 2)
    k, v = (t.view(1, 5, 2, 4).transpose(1, 2).repeat_interleave(2, dim=1) for t in (k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(y, mha.out_proj(ref.transpose(1, 2).flatten(2)), atol=1e-6)
    with pytest.raises(AssertionError):
        StreamingMultiheadAttention(16, 4, kv_repeat=3, custom=True)


@pytest.mark.upstream
@pytest.mark.parametrize("options", [{"past_context": 3}, {"kv_repeat": 2}, {"qk_layer_norm": True},
                                     {"cross_attention": True, "qk_layer_norm_cross": True, "norm_first": True}])
def test_transformer_options_equal_upstream(options):
    """Same weights, same outputs as upstream's custom attention: equal in one pass, close streamed."""
    from upstream import import_upstream

    import_upstream()
    from audiocraft.modules.transformer import StreamingTransformer as UpstreamTransformer

    torch.manual_seed(0)
    causal = not options.get("cross_attention", False)
    kwargs = dict(dropout=0.0, custom=True, causal=causal, **options)
    theirs = UpstreamTransformer(16, 4, 2, **kwargs).eval()
    ours = StreamingTransformer(16, 4, 2, **kwargs).eval()
    ours.load_state_dict(theirs.state_dict())
    x, src = torch.randn(2, 7, 16), torch.randn(2, 5, 16)
    extra = {"cross_attention_src": src} if options.get("cross_attention") else {}
    with torch.no_grad():
        ref = theirs(x, **extra)
        assert torch.equal(ours(x, **extra), ref)  # the same explicit products as upstream's, bit for bit
        if causal:
            with ours.streaming():
                streamed = torch.cat([ours(x[:, a:b]) for a, b in ((0, 1), (1, 4), (4, 7))], dim=1)
            assert torch.allclose(streamed, ref, atol=1e-5)


@pytest.mark.upstream
@pytest.mark.parametrize("options", [{"custom": True}, {"custom": False}, {"memory_efficient": True},
                                     {"custom": True, "cross_attention": True, "layer_scale": 0.1},
                                     {"custom": False, "cross_attention": True}])
def test_seeded_transformer_init_equals_upstream(options):
    """The same seed draws the same random weights as upstream (its layer is an nn.TransformerEncoderLayer)."""
    from upstream import import_upstream

    import_upstream()
    from audiocraft.modules.transformer import StreamingTransformer as UpstreamTransformer

    torch.manual_seed(1234)
    theirs = {k.replace("mha.", ""): v for k, v in UpstreamTransformer(16, 4, 2, **options).state_dict().items()}
    theirs_next = torch.rand(3)
    torch.manual_seed(1234)
    ours = StreamingTransformer(16, 4, 2, **options).state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert torch.equal(torch.rand(3), theirs_next)  # and leaves the generator where upstream does


@pytest.mark.upstream
@pytest.mark.parametrize("options", [{}, {"custom": True, "memory_efficient": False}, {"cross_attention": True},
                                     {"weight_init": None, "depthwise_init": None, "zero_bias_init": False}])
def test_seeded_lm_init_equals_upstream(options):
    """`get_lm_model` after `torch.manual_seed`: upstream's weights (gaussian depthwise init included)."""
    from upstream import import_upstream

    import_upstream()
    from omegaconf import OmegaConf
    from audiocraft.models import builders as upstream_builders
    from audiocraft_patched.models import builders
    from audiocraft_patched.utils.tiny import tiny_musicgen_config

    cfg = tiny_musicgen_config("unused")
    cfg["conditioners"], cfg["fuser"]["cross"] = {}, []  # no text encoder: the LM's own weights
    cfg["transformer_lm"].update(options)
    torch.manual_seed(0)
    theirs = upstream_builders.get_lm_model(OmegaConf.create(copy.deepcopy(cfg))).state_dict()
    torch.manual_seed(0)
    ours = builders.get_lm_model(copy.deepcopy(cfg)).state_dict()
    assert set(ours) == set(theirs)
    assert [k for k in ours if not torch.equal(ours[k], theirs[k])] == []


def test_debug_audiogen_shapes_and_upstream_errors():
    from audiocraft_patched.models import AudioGen

    ag = AudioGen.get_pretrained("debug", device="cpu")
    assert (ag.frame_rate, ag.sample_rate, ag.audio_channels) == (25, 16000, 1)
    ag.set_generation_params(duration=0.4, extend_stride=2.0)
    torch.manual_seed(0)
    assert list(ag.generate(["dog barking", "rain"]).shape) == [2, 1, 6400]
    prompt = torch.randn(2, 1, 1600)
    assert list(ag.generate_continuation(prompt, 16000, ["a", "b"]).shape) == [2, 1, 6400]
    assert list(ag.generate_continuation(prompt[:1], 16000).shape) == [1, 1, 6400]
    with pytest.raises(AssertionError, match="3 descriptions for 2 prompts"):
        ag.generate_continuation(prompt, 16000, ["a", "b", "one too many"])
    ag.max_duration = 0.4
    ag.set_generation_params(duration=0.8, extend_stride=0.2)
    assert list(ag.generate(["wind"]).shape) == [1, 1, 12800]
