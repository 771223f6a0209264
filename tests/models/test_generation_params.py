"""Bad generation settings and texts fail early with a message; sampling names the step of a NaN (issue 16, 9, 13)."""
import math

import pytest
import torch

from audiocraft_patched.models import MusicGen
from audiocraft_patched.models.lm import sample_next_token


@pytest.fixture(scope="module")
def model(tiny_musicgen_dir):
    m = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")
    m.set_generation_params(duration=0.2, top_k=10)
    return m


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(temperature=math.nan), ValueError, "temperature must be a finite number"),
    (dict(temperature=2.2e-308), ValueError, "temperature must be 0 .greedy decoding. or at least 1e-06"),
    (dict(temperature=-1.0), ValueError, "temperature must be 0"),
    (dict(temperature="hot"), TypeError, "temperature must be a number, got str"),
    (dict(cfg_coef=math.nan), ValueError, "cfg_coef must be a finite number"),
    (dict(cfg_coef=math.inf), ValueError, "cfg_coef must be a finite number"),
    (dict(cfg_coef=1e308), ValueError, r"cfg_coef must be within \+-1000"),
    (dict(top_p=1.5), ValueError, r"top_p must be in \[0, 1\]"),
    (dict(top_p=-0.1), ValueError, r"top_p must be in \[0, 1\]"),
    (dict(top_p=math.nan), ValueError, "top_p must be a finite number"),
    (dict(top_k=-1), ValueError, "top_k must be >= 0"),
    (dict(top_k=2.5), TypeError, "top_k must be a whole number"),
    (dict(duration=math.nan), ValueError, "duration must be a finite number"),
    (dict(duration=math.inf), ValueError, "duration must be a finite number"),
    (dict(duration=1e-6), ValueError, r"duration must be > 0 seconds and at least one frame of the model \(0.04 s"),
    (dict(duration=-3.0), ValueError, "duration must be > 0"),
    (dict(duration=30.0, extend_stride=0.001), ValueError, r"extend_stride in \[0.04, 18.5\)"),
    (dict(duration=30.0, extend_stride=math.nan), ValueError, "extend_stride must be a finite number"),
    (dict(use_sampling="yes"), TypeError, "use_sampling must be True or False"),
])
def test_bad_generation_params(model, kwargs, error, message):
    before = dict(model.generation_params)
    with pytest.raises(error, match=message):
        model.set_generation_params(**kwargs)
    assert model.generation_params == before  # nothing half-set


def test_greedy_and_tiny_but_valid_values_work(model):
    model.set_generation_params(duration=0.04, temperature=0.0, top_p=1.0, cfg_coef=-2.0)  # one frame, greedy
    try:
        wav = model.generate(["x"])
        assert wav.shape[-1] == model.sample_rate / model.frame_rate and bool(wav.isfinite().all())
        model.set_generation_params(duration=0.2, temperature=1e-6, top_k=0)
        assert model.generate(["x"]).shape[-1] == 0.2 * model.sample_rate
    finally:
        model.set_generation_params(duration=0.2, top_k=10)


def test_generation_params_dict_is_checked_at_generate(model):
    model.generation_params["temp"] = math.nan  # a public dict: set around the setter
    try:
        with pytest.raises(ValueError, match="temperature must be a finite number"):
            model.generate(["calm"])
    finally:
        model.set_generation_params(duration=0.2, top_k=10)


@pytest.mark.parametrize("descriptions, error, message", [
    ({"a": 1}, TypeError, "got a dict; for several conditions per sample, pass conditions="),
    (b"x", TypeError, "got bytes: decode it first"),
    (bytearray(b"x"), TypeError, "got bytearray"),
    (42, TypeError, "must be a list of strings, got int"),
    (["fine", "bad \ud800 text"], ValueError, r"descriptions\[1\] holds a lone surrogate '\\ud800' at position 4"),
    (["ok", b"x"], TypeError, r"must be str or None, got \['bytes'\] \(descriptions\[1\] = b'x'\)"),
])
def test_bad_descriptions(model, descriptions, error, message):
    with pytest.raises(error, match=message):
        model.generate(descriptions)


def test_sampling_names_the_step_of_a_non_finite_row():
    logits = torch.randn(2, 4, 16)
    logits[1, 2, 5] = math.nan
    for use_sampling in (True, False):
        with pytest.raises(FloatingPointError, match="at sequence step 7, the .* of sample 1, codebook 2 are NaN"):
            sample_next_token(logits, use_sampling, 1.0, 0, 0.0, step=7)
    big = torch.full((1, 1, 4), 3e38)
    big[..., 0] = -3e38
    with pytest.raises(FloatingPointError, match="probabilities .softmax of logits / temperature 1e-30."):
        sample_next_token(big, True, 1e-30, 0, 0.0)


def test_finite_sampling_is_unchanged():
    logits = torch.randn(3, 4, 32, generator=torch.Generator().manual_seed(0))
    for kwargs in (dict(top_k=5, top_p=0.0), dict(top_k=0, top_p=0.9), dict(top_k=0, top_p=0.0)):
        torch.manual_seed(1)
        a = sample_next_token(logits, True, 0.7, step=3, **kwargs)
        torch.manual_seed(1)
        probs = torch.softmax(logits / 0.7, dim=-1)  # the computation before the check, by hand
        assert a.shape == (3, 4, 1) and bool((probs.gather(-1, a) > 0).all())
        torch.manual_seed(1)
        assert torch.equal(a, sample_next_token(logits, True, 0.7, **kwargs))


def test_nan_weights_stop_generation_at_the_first_step_of_the_pattern(tiny_musicgen_dir):
    model = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")
    model.set_generation_params(duration=0.2, use_sampling=False)
    with torch.no_grad():
        model.lm.linears[0].weight[3, 0] = math.nan
    with pytest.raises(FloatingPointError, match="at sequence step 1, the logits of sample 0, codebook 0"):
        model.generate(["calm"])


def test_lone_surrogate_through_conditions_is_a_clear_error(model):
    with pytest.raises(ValueError, match=r"text condition 0 holds a lone surrogate '\\udc80' at position 1"):
        model.generate(conditions=[{"description": "a\udc80"}])
