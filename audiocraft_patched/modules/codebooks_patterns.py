"""Codebook interleaving patterns: how K parallel code streams become one LM sequence.

Mirrors `audiocraft/modules/codebooks_patterns.py` (audiocraft 1.3.0): same classes
(delayed, parallel, unrolled, coarse-first, MusicLM), same layouts, same special-token
handling. Bad shapes raise `ValueAssertionError` (upstream asserts). A pattern is a list of
sequence steps; step `s` holds the `(t, q)` coordinates (timestep, codebook) that the LM
predicts at that step. MusicGen uses the delay pattern, where codebook `q` lags `delays[q]`
steps behind codebook 0:

>>> pattern = DelayedPatternProvider(n_q=3).get_pattern(timesteps=2)
>>> [[(c.t, c.q) for c in step] for step in pattern.layout]
[[], [(0, 0)], [(1, 0), (0, 1)], [(2, 0), (1, 1), (0, 2)], [(3, 0), (2, 1), (1, 2)]]

Step 0 is empty: the LM sees only special tokens there and predicts the first codes. The layout
runs `max(delays)` steps past T to finish the delayed codebooks; coordinates with `t >= T` in
those steps are masked (special token) when a sequence is built.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch

from .errors import ValueAssertionError


class LayoutCoord(NamedTuple):
    t: int  # timestep in the code stream
    q: int  # codebook index


PatternLayout = list[list[LayoutCoord]]


class Pattern:
    """A layout of `timesteps` x `n_q` codes over sequence steps, with the gather maps both ways.

    Args:
        layout: for each sequence step, the coordinates it holds.
        timesteps: number of code timesteps T the layout covers.
        n_q: number of codebooks K.
    """

    def __init__(self, layout: PatternLayout, timesteps: int, n_q: int):
        if not layout:
            raise ValueAssertionError("a pattern needs at least one sequence step")
        self.layout = layout
        self.timesteps = timesteps
        self.n_q = n_q
        last_t = [-1] * n_q
        for s, coords in enumerate(layout):
            if len({c.q for c in coords}) != len(coords):
                raise ValueAssertionError(f"step {s} holds the same codebook twice")
            for c in coords:
                if c.t < last_t[c.q]:
                    raise ValueAssertionError(f"step {s} goes back in time for codebook {c.q}")
                last_t[c.q] = c.t
        # Index maps depend only on sizes: cache them per pattern (generation reuses them every call).
        self._sequence_maps = lru_cache(maxsize=64)(self._sequence_maps)
        self._reverted_maps = lru_cache(maxsize=64)(self._reverted_maps)

    @property
    def num_sequence_steps(self) -> int:
        return len(self.layout) - 1

    @property
    def max_delay(self) -> int:
        """How many steps past `timesteps` the last code is placed."""
        last = max((c.t + 1 for coords in self.layout[1:] for c in coords), default=0)
        return last - self.timesteps

    @property
    def valid_layout(self) -> PatternLayout:
        """The steps before any code of a timestep >= T would be needed."""
        return self.layout[:len(self.layout) - self.max_delay]

    def starts_with_special_token(self) -> bool:
        return self.layout[0] == []

    def get_sequence_coords_with_timestep(self, t: int, q: int | None = None) -> list[tuple[int, LayoutCoord]]:
        return [(s, c) for s, coords in enumerate(self.layout) for c in coords
                if c.t == t and (q is None or c.q == q)]

    def get_steps_with_timestep(self, t: int, q: int | None = None) -> list[int]:
        return [s for s, _ in self.get_sequence_coords_with_timestep(t, q)]

    def get_first_step_with_timesteps(self, t: int, q: int | None = None) -> int | None:
        steps = self.get_steps_with_timestep(t, q)
        return steps[0] if steps else None

    def _sequence_maps(self, timesteps: int, n_q: int, keep_only_valid_steps: bool,
                       device: str) -> tuple[torch.Tensor, torch.Tensor]:
        """[K, S] indexes into the flattened codes (with one trailing special slot) and validity."""
        if n_q != self.n_q or timesteps > self.timesteps:
            raise ValueAssertionError(f"codes of shape [*, {n_q}, {timesteps}] do not fit a pattern of "
                             f"{self.n_q} codebooks and {self.timesteps} timesteps")
        layout = self.valid_layout if keep_only_valid_steps else self.layout
        special = n_q * timesteps
        indexes = torch.full((n_q, len(layout)), special, dtype=torch.long)
        for s, coords in enumerate(layout):
            for c in coords:
                if c.t < timesteps:
                    indexes[c.q, s] = c.q * timesteps + c.t
        return indexes.to(device), (indexes != special).to(device)

    def _reverted_maps(self, steps: int, n_q: int, keep_only_valid_steps: bool, is_model_output: bool,
                       device: str) -> tuple[torch.Tensor, torch.Tensor]:
        """[K, T] indexes into the flattened sequence (with one trailing special slot) and validity."""
        if n_q != self.n_q:
            raise ValueAssertionError(f"sequence has {n_q} codebooks, the pattern {self.n_q}")
        layout = self.valid_layout if keep_only_valid_steps else self.layout
        if steps > len(layout):
            raise ValueAssertionError(f"sequence of {steps} steps is longer than the pattern ({len(layout)})")
        # The model predicts step s+1 at position s: its outputs skip the leading empty step.
        if is_model_output and self.starts_with_special_token():
            layout = layout[1:]
        special = n_q * steps
        indexes = torch.full((n_q, self.timesteps), special, dtype=torch.long)
        for s, coords in enumerate(layout[:steps]):
            for c in coords:
                if c.t < self.timesteps:
                    indexes[c.q, c.t] = c.q * steps + s
        return indexes.to(device), (indexes != special).to(device)

    @staticmethod
    def _gather(x: torch.Tensor, indexes: torch.Tensor, fill) -> torch.Tensor:
        """x: [..., N] -> [..., *indexes.shape], where index N reads `fill`."""
        x = torch.cat([x, torch.full_like(x[..., :1], fill)], dim=-1)
        return x[..., indexes.view(-1)].view(*x.shape[:-1], *indexes.shape)

    def build_pattern_sequence(self, z: torch.Tensor, special_token: int, keep_only_valid_steps: bool = False
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Codes [B, K, T] -> (sequence [B, K, S], indexes [K, S], mask [K, S])."""
        B, K, T = z.shape
        indexes, mask = self._sequence_maps(T, K, keep_only_valid_steps, str(z.device))
        return self._gather(z.reshape(B, K * T), indexes, special_token), indexes, mask

    def revert_pattern_sequence(self, s: torch.Tensor, special_token: int, keep_only_valid_steps: bool = False
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sequence [B, K, S] -> (codes [B, K, T], indexes [K, T], mask [K, T])."""
        B, K, S = s.shape
        indexes, mask = self._reverted_maps(S, K, keep_only_valid_steps, False, str(s.device))
        return self._gather(s.reshape(B, K * S), indexes, special_token), indexes, mask

    def revert_pattern_logits(self, logits: torch.Tensor, special_token: float, keep_only_valid_steps: bool = False
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits [B, card, K, S] -> (logits [B, card, K, T], indexes [K, T], mask [K, T])."""
        B, card, K, S = logits.shape
        indexes, mask = self._reverted_maps(S, K, keep_only_valid_steps, True, str(logits.device))
        return self._gather(logits.reshape(B, card, K * S), indexes, special_token), indexes, mask


class CodebooksPatternProvider:
    """Makes the pattern for a number of timesteps; `cached`: keep the last 100 (generation asks often)."""

    def __init__(self, n_q: int, cached: bool = True):
        if n_q <= 0:
            raise ValueAssertionError(f"n_q must be positive, got {n_q}")
        self.n_q = n_q
        if cached:
            self.get_pattern = lru_cache(maxsize=100)(self.get_pattern)  # type: ignore[method-assign]

    def get_pattern(self, timesteps: int) -> Pattern:
        raise NotImplementedError


class DelayedPatternProvider(CodebooksPatternProvider):
    """Codebook q is shifted right by `delays[q]` steps (MusicGen's pattern).

    Args:
        n_q: number of codebooks.
        delays: non-decreasing delay per codebook; defaults to `range(n_q)`.
        flatten_first: the first `flatten_first` timesteps are laid out one codebook per step.
        empty_initial: extra empty steps at the start; a negative value drops the special first step.
    """

    def __init__(self, n_q: int, delays: list[int] | None = None, flatten_first: int = 0, empty_initial: int = 0):
        super().__init__(n_q)
        self.delays = list(range(n_q)) if delays is None else list(delays)
        if len(self.delays) != n_q or sorted(self.delays) != self.delays:
            raise ValueAssertionError(f"delays must be {n_q} non-decreasing ints, got {self.delays}")
        self.flatten_first = flatten_first
        self.empty_initial = empty_initial

    def get_pattern(self, timesteps: int) -> Pattern:
        layout: PatternLayout = [] if self.empty_initial < 0 else [[]]
        layout += [[] for _ in range(max(self.empty_initial, 0))]
        for t in range(min(timesteps, self.flatten_first)):
            layout += [[LayoutCoord(t, q)] for q in range(self.n_q)]
        for t in range(self.flatten_first, timesteps + max(self.delays)):
            layout.append([LayoutCoord(t - d, q) for q, d in enumerate(self.delays) if t - d >= self.flatten_first])
        return Pattern(layout, timesteps=timesteps, n_q=self.n_q)


class ParallelPatternProvider(DelayedPatternProvider):
    """All codebooks of a timestep at the same step."""

    def __init__(self, n_q: int, empty_initial: int = 0):
        super().__init__(n_q, [0] * n_q, empty_initial=empty_initial)


class UnrolledPatternProvider(CodebooksPatternProvider):
    """Each timestep unrolled over several sequence steps ("inner steps"), with per-codebook delays.

    Codebook q goes to inner step `flattening[q]` of its timestep; codebooks sharing an inner step
    are predicted together and must share a delay. With n_q=3, flattening=[0, 1, 1] and no delay,
    timestep t occupies two steps: codebook 0, then codebooks 1 and 2. A delay d moves a group's
    codes d positions later in the ordering of (position, coordinates).

    Args:
        n_q: number of codebooks.
        flattening: non-decreasing inner step per codebook; defaults to `range(n_q)` (fully flat).
        delays: non-decreasing delay per codebook; defaults to no delay.
    """

    def __init__(self, n_q: int, flattening: list[int] | None = None, delays: list[int] | None = None):
        super().__init__(n_q)
        flattening = list(range(n_q)) if flattening is None else list(flattening)
        delays = [0] * n_q if delays is None else list(delays)
        for name, values in (("flattening", flattening), ("delays", delays)):
            if len(values) != n_q or sorted(values) != values:
                raise ValueAssertionError(f"{name} must be {n_q} non-decreasing ints, got {values}")
        # inner step -> (its codebooks, their common delay)
        self._groups: dict[int, tuple[list[int], int]] = {}
        for q, (step, delay) in enumerate(zip(flattening, delays)):
            codebooks, group_delay = self._groups.setdefault(step, ([], delay))
            if group_delay != delay:
                raise ValueAssertionError(f"codebooks {codebooks + [q]} share inner step {step} but not their delay "
                                          f"({group_delay} != {delay}); give them the same delay")
            codebooks.append(q)
        self.max_delay = max(delays)
        self._inner_steps = max(flattening) + 1

    def num_virtual_steps(self, timesteps: int) -> int:
        """Sequence steps of `timesteps` without delays, the leading special step included."""
        return timesteps * self._inner_steps + 1

    def get_pattern(self, timesteps: int) -> Pattern:
        end = timesteps + self.max_delay
        keyed: list[tuple[int, list[LayoutCoord]]] = [(-1, [])]
        for t in range(end):
            for step in range(self._inner_steps):
                if step not in self._groups:  # an inner step no codebook uses stays empty
                    keyed.append((t, []))
                    continue
                codebooks, delay = self._groups[step]
                if t + delay < end:
                    keyed.append((t + delay, [LayoutCoord(t, q) for q in codebooks]))
        # Sorting on (delayed position, coordinates) gives upstream's exact step order.
        layout = [coords for _, coords in sorted(keyed)]
        return Pattern(layout, timesteps=timesteps, n_q=self.n_q)


class CoarseFirstPattern(CodebooksPatternProvider):
    """Codebook 0 for all timesteps first, then the others with `delays`."""

    def __init__(self, n_q: int, delays: list[int] | None = None):
        super().__init__(n_q)
        self.delays = [0] * (n_q - 1) if delays is None else list(delays)
        if len(self.delays) != n_q - 1 or sorted(self.delays) != self.delays:
            raise ValueAssertionError(f"delays must be {n_q - 1} non-decreasing ints, got {self.delays}")

    def get_pattern(self, timesteps: int) -> Pattern:
        layout: PatternLayout = [[]] + [[LayoutCoord(t, 0)] for t in range(timesteps)]
        for t in range(timesteps + max(self.delays)):
            layout.append([LayoutCoord(t - d, q + 1) for q, d in enumerate(self.delays) if t - d >= 0])
        return Pattern(layout, timesteps=timesteps, n_q=self.n_q)


class MusicLMPattern(CodebooksPatternProvider):
    """Groups of `group_by` codebooks, each group flattened over all timesteps in turn."""

    def __init__(self, n_q: int, group_by: int = 2):
        super().__init__(n_q)
        if group_by <= 0 or n_q % group_by:
            raise ValueAssertionError(f"group_by={group_by} must divide n_q={n_q}")
        self.group_by = group_by

    def get_pattern(self, timesteps: int) -> Pattern:
        layout: PatternLayout = [[]]
        for first in range(0, self.n_q, self.group_by):
            for t in range(timesteps):
                layout += [[LayoutCoord(t, q)] for q in range(first, first + self.group_by)]
        return Pattern(layout, timesteps=timesteps, n_q=self.n_q)
