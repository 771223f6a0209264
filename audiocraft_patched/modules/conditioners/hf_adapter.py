"""`HFAdapterConditioner` (`model: hf_adapter`): a Hugging Face encoder + an adapter + `output_proj`.

No upstream counterpart; it extends our `HFEncoderConditioner` (which replaces upstream's
`T5Conditioner`) so that an aligned or fine-tuned encoder is an ordinary conditioner option:

    conditioners:
      description:
        model: hf_adapter
        hf_adapter: {name: <hub id or folder>, adapter: {kind: mlp, hidden: 512}, finetune: false}

Builders construct it from that config, and its adapter weights are saved beside `output_proj`
under `condition_provider.conditioners.<attr>.adapter.*`, so a checkpoint holding it loads with
`MusicGen.get_pretrained(folder)` like any other. With `adapter: {kind: linear}` (the default) it
computes exactly what the `hf` conditioner computes.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from ..modules.conditioners import register_encoder
from ..modules.conditioners.base import ConditionType
from ..modules.conditioners.hf_encoder import HFEncoderConditioner
from .adapters import build_adapter


@register_encoder("hf_adapter")
class HFAdapterConditioner(HFEncoderConditioner):
    """Text conditioner: encoder hidden states -> adapter -> `output_proj` -> LM width.

    Args:
        name: hub id or local folder of the encoder and its tokenizer.
        output_dim: LM width.
        adapter: adapter config, `{'kind': 'linear' | 'mlp' | 'resampler', **options}`
            (see `align.adapters`); None means linear.
        finetune: train the encoder too (its weights then go into checkpoints).
        device: where the encoder runs.
        **kwargs: the other `HFEncoderConditioner` options (pooling, layer, max_length, ...).
    """

    def __init__(self, name: str, output_dim: int, adapter: dict | None = None, finetune: bool = False,
                 device: str | torch.device = "cpu", **kwargs):
        super().__init__(name, output_dim, finetune=finetune, device=device, **kwargs)
        options = dict(adapter or {"kind": "linear"})
        self.adapter_config = dict(options)
        self.adapter = build_adapter(self.dim, **options)
        if self.adapter.out_dim != self.output_proj.in_features:
            self.output_proj = nn.Linear(self.adapter.out_dim, output_dim)
        self.adapter.to(device)
        self.output_proj.to(device)

    def project(self, hidden: torch.Tensor, mask: torch.Tensor) -> ConditionType:
        """Encoder states -> condition; split from `forward` so training can cache encoder states.

        Args:
            hidden: [B, T, D_enc] encoder hidden states (zero or anything at padding).
            mask: [B, T] 1 for tokens, 0 for padding.
        Returns:
            (condition [B, T', output_dim] zero where the mask is 0, mask [B, T']).
        """
        if self.pooling != "none":
            hidden, mask = self.pool(hidden, mask)
        hidden = hidden.to(self.output_proj.weight)
        hidden, mask = self.adapter(hidden, mask)
        embeds = self.output_proj(hidden)
        return embeds * mask.unsqueeze(-1).to(embeds.dtype), mask

    def forward(self, inputs: dict[str, torch.Tensor]) -> ConditionType:
        autocast = nullcontext()
        if self.autocast_dtype not in (None, torch.float32) and self.device.type != "cpu":
            autocast = torch.autocast(self.device.type, dtype=self.autocast_dtype)
        # Frozen encoder: no graph through it even while the adapter trains.
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()), autocast:
            hidden = self.encode(inputs)
        return self.project(hidden, inputs["attention_mask"])
