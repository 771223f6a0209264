"""LSTM over conv-layout sequences, used inside SEANet; mirrors `audiocraft/modules/lstm.py` (audiocraft 1.3.0)."""
from __future__ import annotations

import torch
from torch import nn


class StreamableLSTM(nn.Module):
    """LSTM over time with a residual connection, on conv layout [B, C, T].

    Args:
        dimension: channels C, both input and hidden size.
        num_layers: stacked LSTM layers.
        skip: add the input to the output.
    """

    def __init__(self, dimension: int, num_layers: int = 2, skip: bool = True):
        super().__init__()
        self.skip = skip
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)  # [T, B, C]: nn.LSTM is not batch_first
        y, _ = self.lstm(x)
        if self.skip:
            y = y + x
        return y.permute(1, 2, 0)  # [B, C, T]
