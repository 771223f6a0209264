"""Streaming generation: audio chunks while the LM is still producing tokens.

No upstream counterpart (upstream decodes once, after the last step). The LM runs in a worker
thread; after each step (`LMModel.generate(on_step=...)`) the frames whose codes are complete in
every codebook (the delay pattern finishes frame t some steps after it starts it) are handed
over, and the codec decodes them in overlapping windows: each window starts `context` frames
before the first sample it emits (the decoder's convolutions and LSTM see the past they would
see in a one-shot decode) and ends `lookahead` frames after the last one (its convolutions look
ahead too). The joined chunks equal the one-shot decode within a small bound
(`tests/models/test_stream.py` measures and asserts it).
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator, Sequence

import torch


class _Stopped(Exception):
    """Raised in the worker when the consumer stopped reading (the generator was closed)."""


def ready_frames(pattern) -> list[int]:
    """For each frame t, the sequence step after which all its codebooks are generated."""
    ready = [0] * pattern.timesteps
    for step, coords in enumerate(pattern.layout):
        for coord in coords:
            if coord.t < pattern.timesteps:
                ready[coord.t] = max(ready[coord.t], step)
    return ready


def generate_stream(model, descriptions: Sequence[str | None], chunk_seconds: float = 1.0,
                    context_seconds: float = 1.0, lookahead_seconds: float = 0.2) -> Iterator[torch.Tensor]:
    """Yield audio [B, C, samples] chunks of `model.generate(descriptions)` as the tokens come.

    Args:
        model: a MusicGen whose duration (`set_generation_params`) fits one window (max_duration).
        descriptions: one text (or None) per sample.
        chunk_seconds: audio handed over at a time (the last chunk may be shorter).
        context_seconds, lookahead_seconds: frames decoded before / after each chunk so its
            samples match the one-shot decode (more: closer, and more decoding).
    """
    for name, value in (("chunk_seconds", chunk_seconds), ("context_seconds", context_seconds),
                        ("lookahead_seconds", lookahead_seconds)):
        if not isinstance(value, (int, float)) or value < 0 or (name == "chunk_seconds" and value <= 0):
            raise ValueError(f"{name} must be a number {'> 0' if name == 'chunk_seconds' else '>= 0'}, got {value!r}")
    if model.duration > model.max_duration:
        raise ValueError(f"streaming covers one window: duration {model.duration:g} s is longer than the model's "
                         f"{model.max_duration:g} s; shorten it with set_generation_params(duration=...)")
    attributes = model._text_attributes(model._check_descriptions(descriptions))
    total = int(model.duration * model.frame_rate)
    hop = round(model.sample_rate / model.frame_rate)
    chunk, context, lookahead = (max(1, round(s * model.frame_rate)) if s else 0
                                 for s in (chunk_seconds, context_seconds, lookahead_seconds))
    pattern = model.lm.pattern_provider.get_pattern(total)
    ready = ready_frames(pattern)
    handed: queue.Queue = queue.Queue()
    stop = threading.Event()
    sent = 0  # frames the consumer will have emitted once it has what was handed over

    def on_step(sequence: torch.Tensor, step: int) -> None:
        nonlocal sent
        if stop.is_set():
            raise _Stopped
        done = sum(1 for r in ready if r <= step)
        if done - lookahead - sent >= chunk and done < total:  # a chunk is ready, its lookahead too
            codes, _, _ = pattern.revert_pattern_sequence(sequence, special_token=-1)
            handed.put(codes[..., :done].clone())
            sent = done - lookahead

    def work() -> None:
        try:
            handed.put(model.lm.generate(None, attributes, max_gen_len=total, on_step=on_step,
                                         **model.generation_params))
        except _Stopped:
            pass
        except BaseException as exc:  # re-raised in the consumer's thread
            handed.put(exc)

    worker = threading.Thread(target=work, name="musicgen-stream", daemon=True)
    worker.start()
    emitted = 0
    try:
        while emitted < total:
            item = handed.get()
            if isinstance(item, BaseException):
                raise item
            done = item.shape[-1]
            target = done if done == total else done - lookahead
            if target <= emitted:
                continue
            start = max(0, emitted - context)
            with torch.no_grad():
                wav = model.compression_model.decode(item[..., start:done], None)
            yield wav[..., (emitted - start) * hop:(target - start) * hop]
            emitted = target
    finally:
        stop.set()
        worker.join()
