"""Streaming: the explicit KV cache, and upstream's `streaming()` contract built on it.

Mirrors `audiocraft/modules/streaming.py` (audiocraft 1.3.0) in what it offers (`StreamingModule`
with `streaming()`, `get_streaming_state`, `set_streaming_state`, `reset_streaming`, `flush`),
not in how: upstream keeps a `_streaming_state` dict on every module and flips a flag on the
whole tree; here a session is one object that the context manager creates and drops, holding
the self-attention caches (`KVCache`, the same cache generation preallocates) and the position.
Nothing else changes state, and generation (which passes its caches explicitly) never sees it.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn


@dataclass
class KVCache:
    """Self-attention keys/values of one layer, preallocated for a whole generation.

    `keys`/`values` are [B, H, capacity, D]; positions `[0, length)` are filled.

    Fixed-shape steps (the compiled decode step, `LMModel.compile_step`): with `position` (a [1]
    long tensor) and `visible` ([1, window] bool, a prefix view of the slots, window <= capacity)
    set, `write` stores one step at `position` and attention reads the first `window` slots through
    `visible`. The buffers keep their shapes, and the window grows by whole blocks and is marked
    dynamic, so one compiled graph serves every step. The owner advances `position` and `visible`.
    """

    keys: torch.Tensor
    values: torch.Tensor
    length: int = 0
    position: torch.Tensor | None = None
    visible: torch.Tensor | None = None

    @classmethod
    def empty(cls, batch: int, heads: int, capacity: int, head_dim: int, like: torch.Tensor) -> "KVCache":
        shape = (batch, heads, capacity, head_dim)
        return cls(like.new_empty(shape), like.new_empty(shape))

    @classmethod
    def fixed(cls, batch: int, heads: int, capacity: int, head_dim: int, like: torch.Tensor,
              position: torch.Tensor, visible: torch.Tensor) -> "KVCache":
        """A cache for fixed-shape steps. Zero-filled: attention multiplies the unwritten slots by
        a zero weight, which must not meet the NaN an uninitialised slot can hold."""
        shape = (batch, heads, capacity, head_dim)
        return cls(like.new_zeros(shape), like.new_zeros(shape), position=position, visible=visible)

    def write(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed-shape step: store k, v [B, H, 1, D] at `position`; return the window's keys and values."""
        self.keys.index_copy_(2, self.position, k)
        self.values.index_copy_(2, self.position, v)
        window = self.visible.shape[-1]
        return self.keys[:, :, :window], self.values[:, :, :window]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, H, t, D] after what is cached; return all cached keys and values."""
        end = self.length + k.shape[2]
        if end > self.keys.shape[2]:
            raise RuntimeError(f"KV cache holds {self.keys.shape[2]} steps, {end} asked")
        self.keys[:, :, self.length:end] = k
        self.values[:, :, self.length:end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def reserve(self, steps: int) -> None:
        """Make room for `steps` more (streaming, where the length is not known ahead): doubles the capacity."""
        need = self.length + steps
        if need > self.keys.shape[2]:
            grown = KVCache.empty(self.keys.shape[0], self.keys.shape[1], max(need, 2 * self.keys.shape[2]),
                                  self.keys.shape[3], self.keys)
            grown.append(self.keys[:, :, :self.length], self.values[:, :, :self.length])
            self.keys, self.values = grown.keys, grown.values


@dataclass
class _Stream:
    """One streaming session: per-layer self-attention caches (made at the first chunk) and the position."""

    caches: list[KVCache] = field(default_factory=list)
    offset: int = 0


class StreamingModule(nn.Module):
    """Upstream's streaming contract, on an explicit session object instead of per-module state.

    Inside `with module.streaming():` each call continues the previous one (positions, causal
    keys/values); `get_streaming_state` / `set_streaming_state` save and restore the session.
    """

    _stream: _Stream | None = None

    @contextmanager
    def streaming(self) -> Iterator[None]:
        if self._stream is not None:
            raise RuntimeError("already streaming: streaming() sessions do not nest")
        self._stream = _Stream()
        try:
            yield
        finally:
            self._stream = None

    def reset_streaming(self) -> None:
        """Start the current session over (as if `streaming()` had just been entered)."""
        if self._stream is not None:
            self._stream = _Stream()

    def get_streaming_state(self) -> dict[str, torch.Tensor]:
        """The session as tensors: `offset` and `<i>.past_keys` / `<i>.past_values` per cache."""
        if self._stream is None:
            raise RuntimeError("get_streaming_state() needs an active `with module.streaming():`")
        state = {"offset": torch.tensor(self._stream.offset)}
        for i, cache in enumerate(self._stream.caches):
            state[f"{i}.past_keys"] = cache.keys[:, :, :cache.length]
            state[f"{i}.past_values"] = cache.values[:, :, :cache.length]
        return state

    def set_streaming_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a session saved by `get_streaming_state` (its tensors are copied)."""
        if self._stream is None:
            raise RuntimeError("set_streaming_state() needs an active `with module.streaming():`")
        caches = []
        for i in range(sum(key.endswith(".past_keys") for key in state)):
            keys, values = state[f"{i}.past_keys"], state[f"{i}.past_values"]
            cache = KVCache.empty(keys.shape[0], keys.shape[1], keys.shape[2], keys.shape[3], keys)
            cache.append(keys, values)
            caches.append(cache)
        self._stream = _Stream(caches, int(state["offset"]))

    def flush(self, x: torch.Tensor | None = None) -> torch.Tensor | None:
        """Nothing is buffered here: returns None, or the output for a last chunk `x`."""
        return None if x is None else self(x)

    def _stream_caches(self, count: int, steps: int, batch: int, heads: int, head_dim: int,
                       like: torch.Tensor) -> list[KVCache]:
        """The session's `count` caches, made or grown to take `steps` more."""
        assert self._stream is not None
        if not self._stream.caches:
            self._stream.caches = [KVCache.empty(batch, heads, max(steps, 16), head_dim, like) for _ in range(count)]
        for cache in self._stream.caches:
            cache.reserve(steps)
        return self._stream.caches
