"""generate_stream: chunks while tokens come; joined, they equal the one-shot decode within a bound."""
import threading

import pytest
import torch

from audiocraft_patched.models import MusicGen

TEXTS = ["a loud fast trumpet melody in a high register with busy hi-hats", "a quiet slow flute melody"]


@pytest.fixture(scope="module")
def model():
    model = MusicGen.get_pretrained("default", device="cpu")
    model.set_generation_params(duration=2.0, top_k=250, cfg_coef=3.0)
    return model


def test_joined_stream_equals_one_shot_decode(model):
    torch.manual_seed(3)
    reference = model.generate(TEXTS)
    torch.manual_seed(3)
    chunks = list(model.generate_stream(TEXTS, chunk_seconds=0.5, context_seconds=0.5, lookahead_seconds=0.2))
    assert all(c.shape[:2] == (2, 1) for c in chunks)
    # 0.25 s first (first_chunk_seconds), then 0.5 s each as the tokens come, the rest last
    assert [c.shape[-1] * model.frame_rate // model.sample_rate for c in chunks] == [12, 25, 25, 25, 13]  # frames
    joined = torch.cat(chunks, dim=-1)
    assert joined.shape == reference.shape
    # Measured on the embedded model (4 s clips): 3.6e-7 with 0.2 s or more of context (float32 rounding), 0.64
    # (of a peak of 1.18) without any: the overlap is what makes the seams clean.
    assert (joined - reference).abs().max() < 1e-5
    torch.manual_seed(3)
    seamy = torch.cat(list(model.generate_stream(TEXTS, chunk_seconds=0.5, context_seconds=0.0)), dim=-1)
    assert (seamy - reference).abs().max() > 1e-2
    torch.manual_seed(3)
    even = list(model.generate_stream(TEXTS, chunk_seconds=0.5, context_seconds=0.5, first_chunk_seconds=None))
    assert len(even) == 4 and (torch.cat(even, dim=-1) - reference).abs().max() < 1e-5


def test_closing_the_stream_stops_the_worker_and_errors_are_clear(model):
    stream = model.generate_stream(TEXTS, chunk_seconds=0.5)
    next(stream)
    stream.close()
    assert not any(t.name == "musicgen-stream" for t in threading.enumerate())
    model.set_generation_params(duration=8.0)
    try:
        with pytest.raises(ValueError, match="streaming covers one window"):
            next(model.generate_stream(TEXTS))
    finally:
        model.set_generation_params(duration=2.0, top_k=250, cfg_coef=3.0)
    with pytest.raises(ValueError, match="chunk_seconds must be a number > 0"):
        next(model.generate_stream(TEXTS, chunk_seconds=0))
