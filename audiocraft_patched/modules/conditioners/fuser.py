"""`ConditionFuser`: how conditions enter the LM (summed, prepended, cross-attended or interpolated).

Mirrors `ConditionFuser` of `audiocraft/modules/conditioners.py` (audiocraft 1.3.0): same
constructor, methods and outputs. Beyond upstream: `add()` (a conditioner attached to a built
LM) and `config()` (the checkpoint writer records the fuser from it).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..transformer import create_sin_embedding
from .base import ConditionType


class ConditionFuser(nn.Module):
    """Combines conditions with the LM input: 'sum', 'prepend', 'cross' or 'input_interpolate'.

    Args:
        fuse2cond: {method: [attribute names]}.
        cross_attention_pos_emb: add a sinusoidal embedding to the cross-attention source.
        cross_attention_pos_emb_scale: its scale.
    """

    FUSING_METHODS = ["sum", "prepend", "cross", "input_interpolate"]

    def __init__(self, fuse2cond: dict[str, list[str]], cross_attention_pos_emb: bool = False,
                 cross_attention_pos_emb_scale: float = 1.0):
        super().__init__()
        unknown = set(fuse2cond) - set(self.FUSING_METHODS)
        if unknown:
            raise ValueError(f"unknown fuse methods {sorted(unknown)}; use {self.FUSING_METHODS}")
        self.fuse2cond = {method: list(fuse2cond.get(method, [])) for method in self.FUSING_METHODS}
        self.cond2fuse = {cond: method for method, conds in self.fuse2cond.items() for cond in conds}
        self.cross_attention_pos_emb = cross_attention_pos_emb
        self.cross_attention_pos_emb_scale = cross_attention_pos_emb_scale

    def add(self, attribute: str, method: str = "cross") -> None:
        """Fuse the condition `attribute` with `method` from now on (a conditioner added to a built LM)."""
        if method not in self.FUSING_METHODS:
            raise ValueError(f"fuse method must be one of {self.FUSING_METHODS}, got {method!r}")
        if attribute in self.cond2fuse:
            raise ValueError(f"{attribute!r} is already fused ({self.cond2fuse[attribute]!r})")
        self.fuse2cond[method].append(attribute)
        self.cond2fuse[attribute] = method

    def config(self) -> dict[str, Any]:
        """The `fuser` entry of a checkpoint config, in upstream's shape."""
        return {**{method: list(names) for method, names in self.fuse2cond.items()},
                "cross_attention_pos_emb": self.cross_attention_pos_emb,
                "cross_attention_pos_emb_scale": self.cross_attention_pos_emb_scale}

    def forward(self, input: torch.Tensor, conditions: dict[str, ConditionType], first_step: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fuse.

        Args:
            input: [B, T, D] LM input embeddings.
            conditions: {attribute: (cond [B, L, D], mask [B, L])}.
            first_step: False on later generation steps, where 'prepend' was already done.
        Returns:
            (input [B, T', D], cross-attention source [B, L_total, D] or None).
        """
        unknown = set(conditions) - set(self.cond2fuse)
        if unknown:
            raise KeyError(f"no fuse method for conditions {sorted(unknown)}")
        cross = []
        for name, (cond, _) in conditions.items():
            method = self.cond2fuse[name]
            if method == "sum":
                input = input + cond
            elif method == "input_interpolate":
                cond = F.interpolate(cond.transpose(1, 2), size=input.shape[1]).transpose(1, 2)
                input = input + cond
            elif method == "prepend":
                if first_step:
                    input = torch.cat([cond, input], dim=1)
            else:
                cross.append(cond)
        source = torch.cat(cross, dim=1) if cross else None
        if self.cross_attention_pos_emb and source is not None:
            positions = torch.arange(source.shape[1], device=source.device).view(1, -1, 1)
            source = source + self.cross_attention_pos_emb_scale * create_sin_embedding(positions, source.shape[-1])
        return input, source
