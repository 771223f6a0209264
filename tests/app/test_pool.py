"""The app's model pool without a browser: lazy loading, errors, one generation per model at a time."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from audiocraft_patched.app.pool import ModelPool, score_clip, spectrogram_image, write_wav
from audiocraft_patched.models import MusicGen
from audiocraft_patched.modules.weight_quant import QuantizedWeight

PROMPT = "a loud fast trumpet melody in a high register with busy hi-hats"


@pytest.fixture(scope="module")
def pool():
    loads = []

    def loader(name):
        loads.append(name)
        if name == "broken":
            raise OSError("state_dict.bin is not a checkpoint")
        return MusicGen.get_pretrained("default", device="cpu")

    pool = ModelPool(["default", "other", "broken"], loader=loader)
    pool.loads = loads
    return pool


def test_models_load_lazily_and_once(pool):
    assert pool.loads == []  # nothing loaded before the first request
    first = pool.generate("default", PROMPT, seed=3, duration=0.3)
    again = pool.generate("default", PROMPT, seed=3, duration=0.3)
    assert pool.loads == ["default"]
    assert first.wav.shape == (1, round(0.3 * first.sample_rate))
    np.testing.assert_array_equal(first.wav, again.wav)  # same seed, same clip
    assert "ms/step" in first.timing and "output_proj" in first.encoder[0]


def test_bad_requests_say_what_to_change(pool):
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        pool.generate("nope", PROMPT)
    with pytest.raises(ValueError, match="duration must be in"):
        pool.generate("default", PROMPT, duration=0)
    with pytest.raises(ValueError, match="duration must be in"):
        pool.generate("default", PROMPT, duration=float("nan"))
    with pytest.raises(ValueError, match="type a prompt"):
        pool.generate("default", "   ")
    with pytest.raises(ValueError, match="dtype must be one of"):
        pool.generate("default", PROMPT, dtype="int3")


def test_a_model_that_fails_to_load_fails_fast_and_alone(pool):
    for _ in range(2):
        with pytest.raises(ValueError, match="'broken' failed to load: OSError"):
            pool.generate("broken", PROMPT, duration=0.2)
    assert pool.loads.count("broken") == 1  # the failure is remembered, not retried per request
    assert pool.generate("other", PROMPT, duration=0.2).wav.shape[-1] > 0  # the others keep working


def test_one_generation_per_model_at_a_time(pool):
    """Concurrent requests on one model run one after another and each gets its own seed's clip."""
    model = pool.model("default")
    active, overlap = [0], [False]
    original = model.generate

    def watched(*args, **kwargs):
        active[0] += 1
        overlap[0] |= active[0] > 1
        time.sleep(0.05)
        try:
            return original(*args, **kwargs)
        finally:
            active[0] -= 1

    model.generate = watched  # test-only instrumentation of this one instance
    try:
        results = {}
        threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, pool.generate(
            "default", PROMPT, seed=s, duration=0.2))) for s in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    finally:
        del model.generate
    assert not overlap[0] and len(results) == 4
    alone = pool.generate("default", PROMPT, seed=2, duration=0.2)
    np.testing.assert_array_equal(results[2].wav, alone.wav)


def test_spectrogram_score_and_wav(pool, tmp_path):
    clip = pool.generate("default", PROMPT, seed=0, duration=1.0)
    image = spectrogram_image(clip.wav, clip.sample_rate)
    assert image.shape == (160, 640, 3) and image.dtype == np.uint8 and image.std() > 0
    rows = score_clip(PROMPT, clip)
    assert [r[0] for r in rows] == ["instrument", "register", "tempo", "density", "loudness"]
    assert all(r[1] != "-" and r[3] in ("yes", "no") for r in rows)  # the prompt names all five
    assert sum(r[3] == "yes" for r in rows) >= 3  # the trained world model follows most of it
    first, second = write_wav(clip, tmp_path), write_wav(clip, tmp_path)
    assert first != second and first.stat().st_size > 0  # fresh names: nothing overwritten


def test_score_refuses_non_world_audio(pool):
    clip = pool.generate("default", PROMPT, duration=0.2)
    clip.sample_rate = 32000
    with pytest.raises(ValueError, match="16000 Hz mono world clips"):
        score_clip(PROMPT, clip)


def test_each_dtype_and_quantization_is_its_own_copy(pool):
    plain = pool.model("default")
    clip = pool.generate("default", PROMPT, seed=1, duration=0.3, quantize="int8")
    assert clip.wav.shape[-1] == round(0.3 * clip.sample_rate) and np.isfinite(clip.wav).all()
    quantized = pool.model("default", quantize="int8")
    assert quantized is not plain and pool.model("default") is plain  # the fp32 copy is untouched
    assert isinstance(quantized.lm.transformer.layers[0].linear1.weight, QuantizedWeight)
    assert not isinstance(plain.lm.transformer.layers[0].linear1.weight, QuantizedWeight)
    with pytest.raises(ValueError, match="quantize must be one of"):
        pool.generate("default", PROMPT, quantize="int3")
