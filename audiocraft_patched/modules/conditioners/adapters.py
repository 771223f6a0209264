"""Adapters: map a new text encoder's hidden states to what a frozen MusicGen LM was trained on.

No upstream counterpart (audiocraft 1.3.0 projects T5 states with one `nn.Linear`). An adapter
sits between the encoder and the conditioner's `output_proj`:

    encoder hidden [B, T, D_enc] --adapter--> [B, T', D_a] --output_proj--> [B, T', D_lm]

- `linear`: the identity, so `output_proj` alone is the map (exactly the `hf` conditioner);
- `mlp`: token-wise Linear + GELU layers, `output_proj` is the last layer;
- `resampler`: learned queries cross-attend to the encoder states and return a fixed number of
  tokens, whatever the new tokenizer's length (the old and new tokenizers cut text differently).

Every adapter takes and returns `(states, mask)`; rows whose mask is all zero (the empty text,
classifier-free guidance's null condition) stay all-zero.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Adapter(nn.Module):
    """Base: `forward(hidden [B, T, in_dim], mask [B, T]) -> ([B, T', out_dim], [B, T'])`."""

    out_dim: int

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class LinearAdapter(Adapter):
    """The identity: the conditioner's `output_proj` is then the whole (linear) map.

    Args:
        in_dim: encoder width.
    """

    def __init__(self, in_dim: int):
        super().__init__()
        self.out_dim = in_dim

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return hidden, mask


class MLPAdapter(Adapter):
    """Token-wise MLP: `depth` x (Linear -> GELU -> Dropout); `output_proj` follows.

    Args:
        in_dim: encoder width.
        hidden: width of the hidden layers (and of the adapter's output).
        depth: number of Linear + GELU layers (>= 1).
        dropout: dropout after each activation, training only.
    """

    def __init__(self, in_dim: int, hidden: int = 512, depth: int = 1, dropout: float = 0.0):
        super().__init__()
        if depth < 1 or hidden < 1:
            raise ValueError(f"mlp adapter needs depth >= 1 and hidden >= 1, got depth={depth}, hidden={hidden}")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        self.net = nn.Sequential(*layers)
        self.out_dim = hidden

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(hidden), mask


class ResamplerBlock(nn.Module):
    """Pre-norm multi-head cross-attention of the queries to the encoder states, then a feed-forward."""

    def __init__(self, width: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.norm_q = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        # No key bias: it adds the same score to every key, which softmax ignores; its gradient is
        # pure rounding noise that Adam would amplify into real (and irreproducible) updates.
        self.k = nn.Linear(width, width, bias=False)
        self.v = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.norm_ff = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # [B, L, W] -> [B, H, L, W / H]

    def forward(self, x: torch.Tensor, kv: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q(self.norm_q(x))), self._heads(self.k(kv)), self._heads(self.v(kv))
        attend = ~key_padding[:, None, None, :]  # [B, 1, 1, T]: True where a key may be attended
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, dropout_p=p)  # [B, H, N, W / H]
        x = x + self.out(a.transpose(1, 2).flatten(2))
        return x + self.ff(self.norm_ff(x))


class ResamplerAdapter(Adapter):
    """`n_tokens` learned queries that cross-attend to the encoder states (a Perceiver resampler).

    Args:
        in_dim: encoder width.
        width: width of the queries and of the output.
        n_tokens: number of output tokens, whatever the input length.
        num_heads: attention heads (must divide `width`).
        depth: number of cross-attention blocks.
        dropout: attention dropout, training only.
    """

    def __init__(self, in_dim: int, width: int = 256, n_tokens: int = 8, num_heads: int = 4, depth: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"resampler width {width} must be divisible by num_heads {num_heads}")
        if n_tokens < 1 or depth < 1:
            raise ValueError(f"resampler needs n_tokens >= 1 and depth >= 1, got {n_tokens}, {depth}")
        self.queries = nn.Parameter(torch.randn(n_tokens, width) * width ** -0.5)
        self.norm_kv = nn.LayerNorm(in_dim)
        self.proj_kv = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList([ResamplerBlock(width, num_heads, dropout) for _ in range(depth)])
        self.out_dim = width

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B = hidden.shape[0]
        present = mask.amax(1, keepdim=True) if mask.shape[1] else mask.new_zeros(B, 1)  # [B, 1]
        if hidden.shape[1] == 0:  # nothing to attend to: every row is the null condition
            hidden, mask = hidden.new_zeros(B, 1, hidden.shape[2]), mask.new_zeros(B, 1)
        kv = self.proj_kv(self.norm_kv(hidden))  # [B, T, width]
        key_padding = mask == 0
        # A row with no valid key would give NaN attention; let it see its first (zero) position
        # and zero its output below, as the null condition must be.
        key_padding[:, 0] &= present[:, 0] != 0
        x = self.queries.unsqueeze(0).expand(B, -1, -1)  # [B, n_tokens, width]
        for block in self.blocks:
            x = block(x, kv, key_padding)
        out_mask = present.expand(B, x.shape[1]).to(mask.dtype)  # [B, n_tokens]
        return x * out_mask.unsqueeze(-1).to(x.dtype), out_mask


ADAPTERS: dict[str, type[Adapter]] = {"linear": LinearAdapter, "mlp": MLPAdapter, "resampler": ResamplerAdapter}


def build_adapter(in_dim: int, kind: str = "linear", **options) -> Adapter:
    """Build the adapter `kind` ('linear', 'mlp', 'resampler') with its options (config keys)."""
    if kind not in ADAPTERS:
        raise ValueError(f"unknown adapter kind {kind!r}; use one of {sorted(ADAPTERS)}")
    cls = ADAPTERS[kind]
    import inspect

    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "in_dim")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"adapter {kind!r} has no option(s) {unknown}; its options are {allowed}")
    return cls(in_dim, **options)
