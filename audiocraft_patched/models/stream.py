"""Streaming generation: audio chunks while the LM is still producing tokens.

No upstream counterpart (upstream decodes once, after the last step). The LM runs step by step
in the caller's thread (`LMModel.generate_steps`; a worker thread would make torch's CPU kernels
up to 2x slower, bench/README.md); after each step the frames whose codes are complete in every
codebook (the delay pattern finishes frame t some steps after it starts it) are counted, and once
a chunk and its lookahead are complete the codec decodes them in an overlapping window: it
starts `context` frames before the first sample it emits (the decoder's convolutions and LSTM
see the past they would see in a one-shot decode) and ends `lookahead` frames after the last one
(its convolutions look ahead too). The joined chunks equal the one-shot decode within a small
bound (`tests/models/test_stream.py` measures and asserts it). Generation pauses while the
consumer handles a chunk, and stops when the generator is closed.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch


def ready_frames(pattern) -> list[int]:
    """For each frame t, the sequence step after which all its codebooks are generated."""
    ready = [0] * pattern.timesteps
    for step, coords in enumerate(pattern.layout):
        for coord in coords:
            if coord.t < pattern.timesteps:
                ready[coord.t] = max(ready[coord.t], step)
    return ready


def generate_stream(model, descriptions: Sequence[str | None], chunk_seconds: float = 1.0,
                    context_seconds: float = 1.0, lookahead_seconds: float = 0.2,
                    first_chunk_seconds: float | None = 0.25) -> Iterator[torch.Tensor]:
    """Yield audio [B, C, samples] chunks of `model.generate(descriptions)` as the tokens come.

    Args:
        model: a MusicGen whose duration (`set_generation_params`) fits one window (max_duration).
        descriptions: one text (or None) per sample.
        chunk_seconds: audio handed over at a time (the last chunk may be shorter).
        context_seconds, lookahead_seconds: frames decoded before / after each chunk so its
            samples match the one-shot decode (more: closer, and more decoding).
        first_chunk_seconds: the first chunk's length (None: `chunk_seconds`): short, so that the
            first audio comes early (it waits for this much, the lookahead and the pattern's delay).
    """
    for name, value in (("chunk_seconds", chunk_seconds), ("context_seconds", context_seconds),
                        ("lookahead_seconds", lookahead_seconds), ("first_chunk_seconds", first_chunk_seconds)):
        if name == "first_chunk_seconds" and value is None:
            continue
        positive = name in ("chunk_seconds", "first_chunk_seconds")
        if not isinstance(value, (int, float)) or value < 0 or (positive and value <= 0):
            raise ValueError(f"{name} must be a number {'> 0' if positive else '>= 0'}, got {value!r}")
    if model.duration > model.max_duration:
        raise ValueError(f"streaming covers one window: duration {model.duration:g} s is longer than the model's "
                         f"{model.max_duration:g} s; shorten it with set_generation_params(duration=...)")
    attributes = model._text_attributes(model._check_descriptions(descriptions))
    total = int(model.duration * model.frame_rate)
    hop = round(model.sample_rate / model.frame_rate)
    chunk, first, context, lookahead = (max(1, round(s * model.frame_rate)) if s else 0 for s in (
        chunk_seconds, chunk_seconds if first_chunk_seconds is None else first_chunk_seconds, context_seconds,
        lookahead_seconds))
    pattern = model.lm.pattern_provider.get_pattern(total)
    ready = ready_frames(pattern)
    steps = model.lm.generate_steps(None, attributes, max_gen_len=total, **model.generation_params)
    emitted = 0  # frames yielded so far
    try:
        while emitted < total:
            try:
                sequence, step = next(steps)
            except StopIteration as finished:  # the last chunk: whatever is left
                codes, done, target = finished.value, total, total
            else:
                done = sum(1 for r in ready if r <= step)
                if done - lookahead - emitted < (chunk if emitted else first) or done >= total:  # + its lookahead
                    continue
                codes, _, _ = pattern.revert_pattern_sequence(sequence, special_token=-1)
                target = done - lookahead
            start = max(0, emitted - context)
            with torch.no_grad():
                wav = model.compression_model.decode(codes[..., start:done], None)
            yield wav[..., (emitted - start) * hop:(target - start) * hop]
            emitted = target
    finally:
        steps.close()
