"""MAGNeT against upstream audiocraft 1.3.0 on the same tiny weights (issue 11, item 3).

Tiny text-to-music (`magnet/magnet_32khz`) and text-to-audio (`magnet/audio_magnet_16khz`)
MAGNeTs are built by upstream's builders from its hydra-composed solver configs, randomised and
exported in its format. Upstream runs the attention its released models run on: xformers (its
loader switches to it), here `tests/upstream.py`'s stand-in with xformers' semantics. We compare
every stage's logits, the codes after every decoding stage, tokens and audio.
"""
import pytest
import torch

from audiocraft_patched.models import MAGNeT, MagnetLMModel, load_generator
from upstream_models import assert_same_generation, build_upstream_export, write_back

pytestmark = pytest.mark.upstream

TEXTS = ["calm piano with soft drums", "rain on a tin roof"]
SOLVERS = {"music": "magnet/magnet_32khz", "audio": "magnet/audio_magnet_16khz"}


@pytest.fixture(scope="module", params=sorted(SOLVERS))
def folder(request, tiny_t5_dir, tiny_t5_large_dir, tmp_path_factory):
    # 2 s segments: 100 frames at 32 kHz (not a multiple of span_len 3: the tail is dropped), 50 at 16 kHz
    return build_upstream_export(tmp_path_factory.mktemp(request.param), SOLVERS[request.param], 2)


@pytest.fixture(scope="module")
def pair(folder):
    """(upstream MAGNeT, ours); upstream's attention backend back to 'torch' afterwards (its loader sets xformers)."""
    from audiocraft.models import MAGNeT as UpstreamMAGNeT
    from audiocraft.modules import transformer

    up = UpstreamMAGNeT.get_pretrained(str(folder), device="cpu")
    assert transformer._efficient_attention_backend == "xformers"
    yield up, MAGNeT.get_pretrained(str(folder), device="cpu")
    transformer.set_efficient_attention_backend("torch")


def attributes(texts, upstream: bool):
    if upstream:
        from audiocraft.modules.conditioners import ConditioningAttributes
    else:
        from audiocraft_patched.modules.conditioners import ConditioningAttributes
    return [ConditioningAttributes(text={"description": t}) for t in texts]


def test_loads_as_magnet_with_upstream_defaults(pair, folder):
    up, ours = pair
    assert type(load_generator(folder, "cpu")) is MAGNeT and isinstance(ours.lm, MagnetLMModel)
    assert (ours.lm.span_len, ours.lm.subcodes_context) == (up.lm.span_len, up.lm.subcodes_context) == (3, 5)
    assert ours.lm.compression_model_framerate == up.lm.cfg.transformer_lm.compression_model_framerate
    assert (ours.duration, ours.max_duration) == (up.duration, up.max_duration) == (2, 2)
    assert ours.generation_params == up.generation_params
    assert ours.generation_params["decoding_steps"] == [20, 10, 10, 10]


def test_stage_logits_restricted_attention(pair):
    """Every stage's forward: stage 0 attends everywhere, later stages within +-5 steps, as upstream on xformers."""
    from audiocraft.modules import transformer

    up, ours = pair
    codes = torch.randint(ours.lm.card + 1, (2, 4, 30), generator=torch.Generator().manual_seed(1))
    up_cond = up.lm.condition_provider(up.lm.condition_provider.tokenize(attributes(TEXTS, True)))
    cond = ours.lm.condition_tensors(attributes(TEXTS, False))
    with torch.no_grad():
        for stage in range(4):
            expected = up.lm(codes, [], up_cond, stage=stage)
            got = ours.lm(codes, [], cond, stage=stage)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        # What we do not reproduce: upstream's torch fallback reads the mask as a causal flag.
        transformer.set_efficient_attention_backend("torch")
        try:
            fallback = up.lm(codes, [], up_cond, stage=1)
        finally:
            transformer.set_efficient_attention_backend("xformers")
        assert (ours.lm(codes, [], cond, stage=1) - fallback).abs().max() > 1e-3


def _record_stages(lm, store: list, upstream: bool):
    """Wrap `lm._generate_stage` to keep a copy of the codes after each stage."""
    inner = lm._generate_stage

    def wrapped(*args, **kwargs):
        out = inner(*args, **kwargs)
        store.append((out[0] if upstream else out).clone())
        return out

    lm._generate_stage = wrapped
    return lambda: delattr(lm, "_generate_stage")


@pytest.mark.parametrize("params", [
    dict(use_sampling=False),
    dict(),  # upstream's defaults: top_p 0.9, temperature 3 annealed, CFG 10 -> 1
    dict(top_k=5, top_p=0.0, temperature=1.5),
    dict(top_k=0, top_p=0.0, decoding_steps=[4, 3, 2, 2], max_cfg_coef=5.0, min_cfg_coef=2.0),
    dict(span_arrangement="stride1", decoding_steps=[6, 3, 3, 3]),
], ids=["greedy", "defaults", "top_k", "plain_sampling", "stride1"])
def test_every_stage_tokens_and_audio(pair, params):
    up, ours = pair
    stages = {"up": [], "ours": []}
    undo = [_record_stages(up.lm, stages["up"], True), _record_stages(ours.lm, stages["ours"], False)]
    try:
        for model in (up, ours):
            model.set_generation_params(**params)
        torch.manual_seed(7)
        up_wav, up_tokens = up.generate(TEXTS, return_tokens=True)
        torch.manual_seed(7)
        wav, tokens = ours.generate(TEXTS, return_tokens=True)
    finally:
        for fn in undo:
            fn()
    assert len(stages["ours"]) == len(stages["up"]) == 4
    for stage, (got, expected) in enumerate(zip(stages["ours"], stages["up"])):
        assert torch.equal(got, expected), f"codes differ after stage {stage}"
        assert (got[:, :stage + 1] < ours.lm.card).all() and (got[:, stage + 1:] == ours.lm.card).all()
    frames = int(ours.duration * ours.frame_rate)
    assert tokens.shape[-1] == (frames if params.get("span_arrangement") == "stride1" else frames // 3 * 3)
    assert torch.equal(tokens, up_tokens)
    torch.testing.assert_close(wav, up_wav, atol=1e-5, rtol=0)


def test_continuation_unconditional_and_progress(pair):
    up, ours = pair
    prompt = torch.randn(2, 1, int(0.5 * ours.sample_rate), generator=torch.Generator().manual_seed(3))
    calls = {"up": [], "ours": []}
    for model, key in ((up, "up"), (ours, "ours")):
        model.set_generation_params(decoding_steps=[3, 2, 2, 2])
        model.set_custom_progress_callback(lambda done, total, key=key: calls[key].append((done, total)))
    results = []
    for run in (lambda m: m.generate_continuation(prompt, ours.sample_rate, TEXTS, progress=True, return_tokens=True),
                lambda m: m.generate_unconditional(2, progress=True, return_tokens=True)):
        for model in (up, ours):
            torch.manual_seed(11)
            results.append(run(model)[1])
    prompt_codes, _ = ours.compression_model.encode(prompt)
    assert torch.equal(results[1][..., :prompt_codes.shape[-1]], prompt_codes)  # the prompt is kept
    assert torch.equal(results[0], results[1]) and torch.equal(results[2], results[3])
    assert calls["ours"] == calls["up"] and calls["ours"][-1] == (9, 9)


def test_our_export_loads_in_upstream(pair, folder, tmp_path):
    from audiocraft.models import MAGNeT as UpstreamMAGNeT

    write_back(pair[1], folder, tmp_path)
    up = UpstreamMAGNeT.get_pretrained(str(tmp_path), device="cpu")
    again = load_generator(tmp_path, "cpu")
    assert type(again) is MAGNeT
    for model in (up, again):
        model.set_generation_params(decoding_steps=[3, 2, 2, 2])
    assert_same_generation(up, again, TEXTS, 5)


def test_bad_settings_are_named(pair):
    _, ours = pair
    with pytest.raises(ValueError, match="decoding_steps"):
        ours.set_generation_params(decoding_steps=[10, 10])
    with pytest.raises(ValueError, match="span_arrangement"):
        ours.set_generation_params(span_arrangement="overlap")
    with pytest.raises(ValueError, match="at most its segment"):
        ours.set_generation_params(duration=3)
    with pytest.raises(ValueError, match="decoding_steps"):
        ours.set_generation_params(decoding_steps=["20", 10, 10, 10])
    with pytest.raises(ValueError, match="temperature"):
        ours.set_generation_params(temperature=float("nan"))
    with pytest.raises(TypeError, match="duration must be a number"):
        ours.set_generation_params(duration="2")
    with pytest.raises(ValueError, match=r"does not take \['cfg_coef'\]"):
        ours.lm.generate(None, attributes(TEXTS, False), cfg_coef=3.0)
    ours.set_generation_params(duration=1, decoding_steps=[2, 1, 1, 1])  # ours: shorter than the segment
    _, tokens = ours.generate(TEXTS[:1], return_tokens=True)
    assert tokens.shape == (1, 4, int(ours.frame_rate) // 3 * 3)
    ours.set_generation_params(duration=2)


@pytest.mark.parametrize("options", [dict(span_scoring="prod", top_k=0, top_p=0.9, temp=3.0),
                                     dict(anneal_temp=False, top_k=0),
                                     dict(span_arrangement="stride1", span_scoring="prod", top_k=0, top_p=0.5)],
                         ids=["prod", "no_anneal", "stride1_prod"])
def test_lm_generate_options_beyond_the_model_api(pair, options):
    """`MagnetLMModel.generate` options that `MAGNeT.set_generation_params` does not expose, as upstream's LM."""
    up, ours = pair
    kwargs = dict(max_gen_len=40, decoding_steps=[4, 2, 2, 2], **options)
    torch.manual_seed(3)
    expected = up.lm.generate(None, attributes(TEXTS, True), **kwargs)
    torch.manual_seed(3)
    got = ours.lm.generate(None, attributes(TEXTS, False), **kwargs)
    assert torch.equal(got, expected)


def test_null_conditions_negative_prompt(pair):
    """`null_conditions` (negative prompts), as `LMModel.generate`: the default nulls give the same codes."""
    from audiocraft_patched.modules.conditioners import ClassifierFreeGuidanceDropout

    _, ours = pair
    conditions = attributes(TEXTS, False)
    kwargs = dict(max_gen_len=30, decoding_steps=[3, 2, 2, 2], use_sampling=False)
    plain = ours.lm.generate(None, conditions, **kwargs)
    nulls = ClassifierFreeGuidanceDropout(p=1.0)(conditions)
    assert torch.equal(ours.lm.generate(None, conditions, null_conditions=nulls, **kwargs), plain)
    negative = ours.lm.generate(None, conditions, null_conditions=attributes(["drums", "a siren"], False), **kwargs)
    assert negative.shape == plain.shape and not torch.equal(negative, plain)
    with pytest.raises(ValueError, match="1 null conditions for 2"):
        ours.lm.generate(None, conditions, null_conditions=nulls[:1], **kwargs)
