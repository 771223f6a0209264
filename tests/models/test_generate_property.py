"""Property test of `generate` on the embedded default model (issue 16, "Proof").

Random unicode prompts (lone surrogates, control characters, empty strings, None rows and inputs
of the wrong kind) and random settings, valid or not, at durations of a few frames. Every call
either returns finite audio of the requested length, or raises a ValueError/TypeError with a
message. Derandomized and sized to a few seconds, so CI runs the same examples every time.
"""
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings, strategies as st  # noqa: E402

from audiocraft_patched.models import MusicGen  # noqa: E402

CLEAN_TEXT = st.text(max_size=40)
# Lone surrogates and C0/C1 controls, which st.text leaves out or rarely draws.
ODD_TEXT = st.text(st.characters(categories=["Cs", "Cc", "Zs", "Mn"], codec=None), min_size=1, max_size=8)
VALID_PROMPTS = st.lists(st.one_of(st.none(), CLEAN_TEXT), min_size=1, max_size=3)
INVALID_PROMPTS = st.one_of(
    st.lists(st.one_of(st.none(), CLEAN_TEXT, ODD_TEXT), min_size=1, max_size=3),
    st.text(max_size=10),  # one string, unwrapped
    st.binary(max_size=6),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.lists(st.one_of(st.integers(), st.binary(max_size=3), st.floats()), min_size=1, max_size=2),
    st.just([]),
)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)


def mostly(valid, invalid, tenths_invalid: int = 1):
    """Valid values most of the time (invalid about `tenths_invalid` in ten): most calls reach the sampler.

    (Middle values pick the invalid branch: hypothesis draws the ends of a range more often.)
    """
    return st.integers(0, 9).flatmap(lambda i: invalid if 4 <= i < 4 + tenths_invalid else valid)


PROMPTS = mostly(VALID_PROMPTS, INVALID_PROMPTS, tenths_invalid=3)


SETTINGS = st.fixed_dictionaries({}, optional={
    "duration": mostly(st.floats(0.02, 0.1), st.one_of(st.floats(max_value=0.0199), ANY_FLOAT)),
    "temperature": mostly(st.floats(0.0, 3.0), ANY_FLOAT),
    "cfg_coef": mostly(st.floats(-5.0, 10.0), ANY_FLOAT),
    "top_k": mostly(st.integers(0, 300), st.one_of(st.integers(-3, -1), st.floats(0, 10))),
    "top_p": mostly(st.floats(0.0, 1.0), ANY_FLOAT),
    "use_sampling": st.booleans(),
    "two_step_cfg": st.booleans(),
})


@pytest.fixture(scope="module")
def model():
    return MusicGen.get_pretrained("default", device="cpu")


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(prompts=PROMPTS, params=SETTINGS)
def test_generate_returns_finite_audio_or_a_clear_error(model, prompts, params):
    params = {"duration": 0.06, **params}
    try:
        model.set_generation_params(**params)
    except (ValueError, TypeError) as exc:
        assert len(str(exc)) > 20, repr(exc)  # a message saying what is wrong
        event(f"settings refused: {type(exc).__name__}")
        return
    torch.manual_seed(0)
    try:
        wav = model.generate(prompts)
    except (ValueError, TypeError) as exc:
        assert len(str(exc)) > 20, repr(exc)
        event(f"prompts refused: {type(exc).__name__} {str(exc)[:50]}")
        return
    event("generated")
    frames = int(params["duration"] * model.frame_rate)
    assert frames >= 1
    assert wav.shape == (len(prompts), model.audio_channels, frames * model.sample_rate // int(model.frame_rate))
    assert bool(wav.isfinite().all())
    assert isinstance(prompts, list) and all(p is None or isinstance(p, str) for p in prompts)
