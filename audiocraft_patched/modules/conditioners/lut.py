"""`LUTConditioner`: a lookup table over hashed tokens (upstream's debug / categorical conditioner).

Mirrors `LUTConditioner` of `audiocraft/modules/conditioners.py` (1.3.0) with its 'noop'
tokenizer (the whole text hashes to one token). Upstream's 'whitespace' tokenizer lemmatizes with
spacy, which this package does not depend on.
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from .base import ConditionType, TextConditioner
from .registry import register_encoder


def hash_trick(word: str, vocab_size: int) -> int:
    """Stable hash of a string into [0, vocab_size) (md5, like upstream)."""
    return int(hashlib.md5(word.encode("utf-8")).hexdigest(), 16) % vocab_size


@register_encoder("lut")
class LUTConditioner(TextConditioner):
    """Embeds each text as one hashed token.

    Args:
        n_bins: table size.
        dim: embedding width.
        output_dim: LM width.
        tokenizer: 'noop' (whole text -> one token).
        pad_idx: token of missing texts.
        device: where the table goes (every conditioner takes it; upstream's LUT does not).
    """

    def __init__(self, n_bins: int, dim: int, output_dim: int, tokenizer: str = "noop", pad_idx: int = 0,
                 device: str | torch.device = "cpu"):
        super().__init__(dim, output_dim)
        if tokenizer != "noop":
            raise ValueError(f"LUT tokenizer {tokenizer!r} is not supported (upstream's 'whitespace' needs "
                             "spacy); use tokenizer: noop")
        self.n_bins = n_bins
        self.pad_idx = pad_idx
        self.embed = nn.Embedding(n_bins, dim)
        self.to(device)

    def tokenize(self, x: list[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.tensor([[self.pad_idx if t is None else hash_trick(t, self.n_bins)] for t in x])
        mask = torch.tensor([[0 if t is None else 1] for t in x], dtype=torch.int)
        device = self.embed.weight.device
        return tokens.to(device), mask.to(device)

    def encode(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> ConditionType:
        tokens, mask = inputs
        return self.embed(tokens), mask  # [B, 1, dim], [B, 1]

    def options(self) -> dict:
        return {"n_bins": self.n_bins, "dim": self.dim, "tokenizer": "noop", "pad_idx": self.pad_idx}
