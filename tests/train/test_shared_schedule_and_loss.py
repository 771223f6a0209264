"""The world trainers use the one schedule (utils/schedule.py) and the one MusicGen loss (align/losses.py)."""
import math

import pytest
import torch
import torch.nn.functional as F

from audiocraft_patched.align.config import TrainConfig
from audiocraft_patched.align.losses import lm_cross_entropy
from audiocraft_patched.align.train import learning_rate
from audiocraft_patched.models.builders import get_debug_lm_model
from audiocraft_patched.train.codec import warmup_cosine
from audiocraft_patched.train.lm import lm_loss
from audiocraft_patched.utils.schedule import warmup_cosine as schedule


def test_warmup_then_cosine_to_ten_percent():
    factor = warmup_cosine(100)  # 5% warm-up: 5 steps
    assert [factor(s) for s in (0, 4)] == [0.2, 1.0]
    assert factor(5) == 1.0 and factor(100) == factor(1000) == pytest.approx(0.1)
    assert factor(52) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 47 / 95)))
    cfg = TrainConfig(mode="align", model="m", out="o", lr=2e-3, warmup=10, steps=50)
    assert [learning_rate(cfg, s) for s in (0, 9, 50)] == [2e-3 * 1 / 10, 2e-3, pytest.approx(2e-4)]
    assert all(learning_rate(cfg, s) == schedule(s, 50, 10, 2e-3) for s in range(60))


def test_world_lm_loss_is_the_musicgen_cross_entropy():
    torch.manual_seed(0)
    lm = get_debug_lm_model().eval()  # no dropout: both sides compute the same logits
    codes = torch.randint(0, 400, (2, 4, 6))
    texts = ["calm piano", "fast drums"]
    loss = lm_loss(lm, codes, texts)
    from audiocraft_patched.modules.conditioners import ConditioningAttributes

    out = lm.compute_predictions(codes, [ConditioningAttributes(text={"description": t}) for t in texts])
    assert torch.equal(loss, lm_cross_entropy(out.logits, codes, out.mask))
    by_hand = torch.stack([F.cross_entropy(out.logits[:, k][out.mask[:, k]], codes[:, k][out.mask[:, k]])
                           for k in range(4)]).mean()
    torch.testing.assert_close(loss, by_hand, rtol=0, atol=0)
