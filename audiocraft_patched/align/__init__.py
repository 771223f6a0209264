"""Alignment and fine-tuning of a swapped text encoder against a frozen MusicGen, and their metrics.

No upstream counterpart. A released MusicGen was trained on frozen T5 features; a new encoder with a
fresh projection speaks another language. Two ways back:

- `align` (no audio): train an adapter so that the new conditioning makes the frozen LM predict
  what it predicts under the original one (`tasks.AlignTask`);
- `finetune` (audio + captions): the LM's own loss, training the projection / adapter, optionally
  LoRA on cross-attention and the encoder (`tasks.FinetuneTask`);

then measure (`metrics`). The result is an ordinary checkpoint whose conditioner is
`model: hf_adapter` (`modules.conditioners.hf_adapter.HFAdapterConditioner`).

The adapters and the `hf_adapter` conditioner are runtime code (checkpoints load them), so they
live in `modules/conditioners/`; they are re-exported here for convenience. Import `align.train`,
`align.metrics`, ... directly.
"""
from ..modules.conditioners.adapters import (  # noqa: F401
    ADAPTERS,
    Adapter,
    LinearAdapter,
    MLPAdapter,
    ResamplerAdapter,
    build_adapter,
)
from ..modules.conditioners.hf_adapter import HFAdapterConditioner  # noqa: F401
