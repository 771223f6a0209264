"""Codebook patterns: the documented layout, round trips, and equality with upstream's."""
import doctest

import pytest
import torch

from audiocraft_patched.modules import codebooks_patterns as cp


def test_docstring_example():
    assert doctest.testmod(cp, raise_on_error=True).attempted >= 1


@pytest.mark.parametrize("provider", [cp.DelayedPatternProvider(4), cp.ParallelPatternProvider(3),
                                      cp.DelayedPatternProvider(3, [0, 2, 2], flatten_first=2, empty_initial=1),
                                      cp.CoarseFirstPattern(3, [0, 1]), cp.MusicLMPattern(4, 2),
                                      cp.UnrolledPatternProvider(3, [0, 1, 1], [0, 2, 2])])
def test_sequence_round_trip(provider):
    codes = torch.randint(100, (2, provider.n_q, 7))
    pattern = provider.get_pattern(7)
    seq, _, mask = pattern.build_pattern_sequence(codes, special_token=100)
    assert (seq[:, ~mask] == 100).all()
    back, _, back_mask = pattern.revert_pattern_sequence(seq, special_token=-1)
    assert back_mask.all() and torch.equal(back, codes)


def test_bad_delays_message():
    with pytest.raises(ValueError, match="non-decreasing"):
        cp.DelayedPatternProvider(3, [0, 2, 1])
    with pytest.raises(AssertionError, match="share inner step 1 but not their delay"):  # upstream asserts
        cp.UnrolledPatternProvider(3, [0, 1, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="group_by=2 must divide n_q=3"):
        cp.MusicLMPattern(3, 2)


def test_unrolled_layout():
    """n_q=3: codebooks 1 and 2 share an inner step, delayed by 2 positions behind codebook 0."""
    layout = cp.UnrolledPatternProvider(3, [0, 1, 1], [0, 2, 2]).get_pattern(2).layout
    assert [[tuple(c) for c in step] for step in layout] == [
        [], [(0, 0)], [(1, 0)], [(0, 1), (0, 2)], [(2, 0)], [(1, 1), (1, 2)], [(3, 0)]]


@pytest.mark.upstream
@pytest.mark.parametrize("name, args", [("DelayedPatternProvider", (4,)), ("ParallelPatternProvider", (3,)),
                                        ("DelayedPatternProvider", (3, [0, 2, 2], 2, 1)),
                                        ("CoarseFirstPattern", (3, [0, 1])), ("MusicLMPattern", (4, 2)),
                                        ("UnrolledPatternProvider", (3,)),
                                        ("UnrolledPatternProvider", (3, [0, 1, 1], [0, 5, 5])),
                                        ("UnrolledPatternProvider", (4, [0, 2, 2, 3], [0, 3, 3, 4]))])
def test_same_as_upstream(name, args):
    from audiocraft.modules import codebooks_patterns as up

    ours, theirs = getattr(cp, name)(*args).get_pattern(6), getattr(up, name)(*args).get_pattern(6)
    assert [[tuple(c) for c in s] for s in ours.layout] == [[tuple(c) for c in s] for s in theirs.layout]
    codes = torch.randint(50, (2, ours.n_q, 6))
    for valid in (False, True):
        a, b = ours.build_pattern_sequence(codes, 50, valid), theirs.build_pattern_sequence(codes, 50, valid)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        logits = torch.randn(2, 5, ours.n_q, a[0].shape[-1])
        x = ours.revert_pattern_logits(logits, float("nan"), valid)
        y = theirs.revert_pattern_logits(logits, float("nan"), valid)
        torch.testing.assert_close(x[0], y[0], equal_nan=True, atol=0, rtol=0)
        assert torch.equal(x[2], y[2])
    assert ours.get_first_step_with_timesteps(3) == theirs.get_first_step_with_timesteps(3)
