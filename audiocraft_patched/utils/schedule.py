"""The learning-rate schedule every trainer here uses: linear warm-up, then cosine decay to 10%.

No upstream counterpart file (upstream's solvers take flashy's cosine scheduler). `align` /
`finetune` (`align/train.py`) and the world trainers (`train/codec.py`, `train/lm.py`) call it.
"""
from __future__ import annotations

import math


def warmup_cosine(step: int, steps: int, warmup: int, peak: float = 1.0) -> float:
    """The learning rate at `step` (0-based) of `steps` (with `peak` = 1: the factor of the peak rate).

    Args:
        step: the step about to be taken.
        steps: the run's length; the rate reaches 10% of `peak` there and stays.
        warmup: steps of linear warm-up from peak / warmup to peak (0: none).
        peak: the rate after warm-up.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
