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

import torch

from .hf_encoder import HFEncoderConditioner
from .registry import register_encoder


@register_encoder("hf_adapter")
class HFAdapterConditioner(HFEncoderConditioner):
    """Text conditioner: encoder hidden states -> adapter -> `output_proj` -> LM width.

    Args:
        name: hub id or local folder of the encoder and its tokenizer.
        output_dim: LM width.
        adapter: adapter config, `{'kind': 'linear' | 'mlp' | 'resampler', **options}`
            (see `adapters.py`); None means linear.
        finetune: train the encoder too (its weights then go into checkpoints).
        device: where the encoder runs.
        **kwargs: the other `HFEncoderConditioner` options (pooling, layer, max_length, ...).
    """

    def __init__(self, name: str, output_dim: int, adapter: dict | None = None, finetune: bool = False,
                 device: str | torch.device = "cpu", **kwargs):
        super().__init__(name, output_dim, finetune=finetune, device=device, **kwargs)
        self.set_adapter(dict(adapter or {"kind": "linear"}))
        self.adapter.to(device)
        self.output_proj.to(device)

    def options(self) -> dict:
        return {**super().options(), "adapter": dict(self.adapter_config)}
