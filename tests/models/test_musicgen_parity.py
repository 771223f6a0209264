"""Parity with upstream audiocraft 1.3.0 on the same tiny weights: conditioning, logits, tokens, audio.

Models are built by upstream's own builders from its MusicGen configs made small, saved in its
export format, and loaded by both sides (and the reverse: our export loaded by upstream).
"""
import pytest
import torch
from upstream_models import assert_same_generation, build_dict_export

from audiocraft_patched.models import MusicGen
from audiocraft_patched.modules.conditioners import ConditioningAttributes
from audiocraft_patched.utils.tiny import tiny_encodec_config, tiny_musicgen_config

pytestmark = pytest.mark.upstream

TEXTS = ["calm piano with soft drums", None, "", "fast techno beat at 120 bpm, synth and bass"]


def build_upstream_export(folder, stereo: bool, seed: int = 0):
    """Build a tiny MusicGen with upstream's builders, randomise it, save upstream's export files."""
    # Upstream's MusicGen needs max_duration > 18 s (its default extend_stride); a hop of 1280
    # samples (12 frames/s, by upstream's integer division) keeps windows that long cheap.
    lm_cfg = tiny_musicgen_config("t5-base", stereo=stereo, segment_duration=18.5)
    codec_cfg = tiny_encodec_config(lm_cfg["sample_rate"], 1, n_q=4, card=lm_cfg["transformer_lm"]["card"],
                                    ratios=(8, 5, 4, 8))
    return build_dict_export(folder, lm_cfg, codec_cfg, seed)


@pytest.fixture(scope="module", params=["mono", "stereo"])
def pair(request, tiny_t5_dir, tmp_path_factory):
    """(upstream MusicGen, our MusicGen) loaded from the same upstream-built export."""
    from audiocraft.models import MusicGen as UpstreamMusicGen

    folder = build_upstream_export(tmp_path_factory.mktemp(request.param), stereo=request.param == "stereo")
    return UpstreamMusicGen.get_pretrained(str(folder), device="cpu"), MusicGen.get_pretrained(str(folder), "cpu")


def attributes(texts, upstream=False):
    if upstream:
        from audiocraft.modules.conditioners import ConditioningAttributes as cls
    else:
        cls = ConditioningAttributes
    return [cls(text={"description": t}) for t in texts]


def test_conditioner_outputs(pair):
    up, ours = pair
    up_prov, our_prov = up.lm.condition_provider, ours.lm.condition_provider
    expected = up_prov(up_prov.tokenize(attributes(TEXTS, upstream=True)))["description"]
    got = our_prov(our_prov.tokenize(attributes(TEXTS)))["description"]
    torch.testing.assert_close(got[1], expected[1], atol=0, rtol=0)
    torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=0)


def test_logits_on_fixed_codes(pair):
    up, ours = pair
    K, card = ours.lm.num_codebooks, ours.lm.card
    codes = torch.randint(card, (len(TEXTS), K, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = up.lm.compute_predictions(codes, attributes(TEXTS, upstream=True))
        got = ours.lm.compute_predictions(codes, attributes(TEXTS))
    assert torch.equal(got.mask, expected.mask)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=0, equal_nan=True)


@pytest.mark.parametrize("params", [
    dict(use_sampling=False),
    dict(use_sampling=True, top_k=10, temperature=1.0),
    dict(use_sampling=True, top_k=0, top_p=0.8, temperature=0.7),
    dict(use_sampling=True, top_k=0, top_p=0.0, temperature=1.3, cfg_coef=3.0),
    dict(use_sampling=True, top_k=20, two_step_cfg=True, cfg_coef=3.0),
], ids=["greedy", "top_k", "top_p", "temperature", "two_step_cfg"])
def test_generate_same_tokens_and_audio(pair, params):
    up, ours = pair
    for model in (up, ours):
        model.set_generation_params(duration=0.3, **params)
    assert_same_generation(up, ours, TEXTS[:2], 7)


def test_continuation_and_long_duration(pair):
    up, ours = pair
    prompt = torch.randn(2, up.audio_channels, int(0.2 * up.sample_rate), generator=torch.Generator().manual_seed(3))
    for model in (up, ours):
        model.set_generation_params(duration=0.5, top_k=15)
    torch.manual_seed(11)
    _, up_tokens = up.generate_continuation(prompt, up.sample_rate, TEXTS[:2], return_tokens=True)
    torch.manual_seed(11)
    _, tokens = ours.generate_continuation(prompt, ours.sample_rate, TEXTS[:2], return_tokens=True)
    assert torch.equal(tokens, up_tokens)
    # Past max_duration (18.5 s here): windows of 18.5 s advancing by extend_stride.
    for model in (up, ours):
        model.set_generation_params(duration=19.0, top_k=15, extend_stride=1.0)
    torch.manual_seed(12)
    _, up_tokens = up.generate(TEXTS[:1], return_tokens=True)
    torch.manual_seed(12)
    _, tokens = ours.generate(TEXTS[:1], return_tokens=True)
    assert tokens.shape[-1] == int(19.0 * ours.frame_rate)
    assert torch.equal(tokens, up_tokens)


def test_our_export_loads_in_upstream(tiny_musicgen_dir):
    from audiocraft.models import MusicGen as UpstreamMusicGen

    up = UpstreamMusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")
    ours = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")
    for model in (up, ours):
        model.set_generation_params(duration=0.3, top_k=10)
    assert_same_generation(up, ours, TEXTS[:2], 5)
