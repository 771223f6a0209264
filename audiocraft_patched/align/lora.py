"""LoRA on the LM's cross-attention, for fine-tuning; merged away before a checkpoint is written.

No upstream counterpart. A low-rank delta `W + (alpha / rank) * B @ A` is attached to the
cross-attention weights with `torch.nn.utils.parametrize`, so the attention code (which reads
`in_proj_weight` / `out_proj.weight`, also when projecting the condition's keys once per
generation) runs unchanged. `B` starts at zero: a fresh LoRA leaves the model exactly as it was.
Exported state dicts hold the merged weights under upstream's own keys, so the result loads
anywhere a MusicGen checkpoint loads.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

# Rows of upstream's packed `in_proj_weight` ([Wq; Wk; Wv], each [dim, dim]).
IN_PROJ_BLOCKS = ("q", "k", "v")
TARGETS = ("q", "k", "v", "out")


class LoRADelta(nn.Module):
    """Parametrization adding a low-rank delta to chosen row blocks of a weight [out, in].

    Args:
        blocks: (start_row, end_row, trained) for consecutive row blocks covering the weight;
            only trained blocks get a delta.
        in_features: the weight's input width.
        rank: rank of each delta.
        alpha: scale numerator (the delta is scaled by alpha / rank).
    """

    def __init__(self, blocks: list[tuple[int, int, bool]], in_features: int, rank: int, alpha: float):
        super().__init__()
        self.blocks = [(start, end, trained) for start, end, trained in blocks]
        self.scale = alpha / rank
        self.down = nn.ParameterList()
        self.up = nn.ParameterList()
        for start, end, trained in self.blocks:
            if trained:
                a = torch.empty(rank, in_features)
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # as nn.Linear, so the delta's scale is familiar
                self.down.append(nn.Parameter(a))
                self.up.append(nn.Parameter(torch.zeros(end - start, rank)))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        pieces, i = [], 0
        for start, end, trained in self.blocks:
            if trained:
                pieces.append(self.up[i] @ self.down[i] * self.scale)
                i += 1
            else:
                pieces.append(weight.new_zeros(end - start, weight.shape[1]))
        return weight + torch.cat(pieces).to(weight.dtype)


def apply_lora(lm: nn.Module, rank: int = 4, alpha: float | None = None,
               targets: tuple[str, ...] = ("q", "v")) -> list[nn.Parameter]:
    """Attach LoRA to every cross-attention of `lm`; returns the new (trainable) parameters.

    Args:
        lm: an `LMModel` with cross-attention layers.
        rank: LoRA rank (>= 1).
        alpha: scale numerator; default `rank` (scale 1).
        targets: which weights get a delta: 'q', 'k', 'v' (row blocks of `in_proj_weight`), 'out'.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or not targets:
        raise ValueError(f"LoRA targets must be a non-empty subset of {TARGETS}, got {list(targets)}")
    alpha = float(rank if alpha is None else alpha)
    layers = [layer for layer in lm.transformer.layers if layer.cross_attention is not None]
    if not layers:
        raise ValueError("this LM has no cross-attention (its conditions are prepended or summed): LoRA on "
                         "cross-attention does not apply; fine-tune the projection/adapter alone")
    params: list[nn.Parameter] = []
    for layer in layers:
        attn = layer.cross_attention
        d = attn.embed_dim
        ref = attn.in_proj_weight
        in_blocks = [(i * d, (i + 1) * d, name in targets) for i, name in enumerate(IN_PROJ_BLOCKS)]
        deltas = []
        if any(trained for *_, trained in in_blocks):
            deltas.append((attn, "in_proj_weight", LoRADelta(in_blocks, d, rank, alpha)))
        if "out" in targets:
            deltas.append((attn.out_proj, "weight", LoRADelta([(0, d, True)], d, rank, alpha)))
        for module, name, delta in deltas:
            delta.to(device=ref.device, dtype=torch.float32)
            parametrize.register_parametrization(module, name, delta)
            module.parametrizations[name].original.requires_grad_(False)  # the LM stays frozen
            params += list(delta.parameters())
    return params


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model.state_dict()` with every parametrized weight stored merged, under its plain key.

    The model is not modified: training may go on after an export.
    """
    state = {k: v for k, v in model.state_dict().items() if ".parametrizations." not in k}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for tensor_name in module.parametrizations:
                with torch.no_grad():
                    state[f"{name}.{tensor_name}" if name else tensor_name] = getattr(module, tensor_name).detach()
    return state
