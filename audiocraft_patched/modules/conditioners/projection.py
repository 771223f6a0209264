"""The map of conditioner features to the LM width: the one `project` step every conditioner shares.

Upstream (`audiocraft/modules/conditioners.py`, 1.3.0) writes `self.output_proj(x)` then the
padding mask in each conditioner's `forward`. Here `BaseConditioner.project` and the text
conditioners' pooling `project` both end in `project_features`, which patch 0001 also copies.
"""
from __future__ import annotations

import torch
from torch import nn


def project_features(hidden: torch.Tensor, mask: torch.Tensor, output_proj: nn.Linear,
                     adapter: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features -> condition: the adapter (if any), `output_proj`, zero where the mask is 0.

    Args:
        hidden: [B, T, D] features (anything at padding); cast to the projection's dtype/device.
        mask: [B, T] 1 where there is an input.
        output_proj: Linear(D', output_dim), D' the adapter's output width (D without one).
        adapter: `(hidden, mask) -> (hidden [B, T', D'], mask [B, T'])`, e.g. from `adapters.py`.
    Returns:
        (condition [B, T', output_dim], mask [B, T']).
    """
    hidden = hidden.to(output_proj.weight)
    if adapter is not None:
        hidden, mask = adapter(hidden, mask)
    embeds = output_proj(hidden)
    return embeds * mask.unsqueeze(-1).to(embeds.dtype), mask
