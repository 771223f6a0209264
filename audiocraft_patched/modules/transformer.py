"""The MusicGen transformer: causal self-attention, cross-attention to the conditions, a KV cache.

Mirrors `audiocraft/modules/transformer.py` (audiocraft 1.3.0) for the options the released
MusicGen configs use (sinusoidal positions, pre/post norm, optional biases, layer scale) with the
same parameter names, so upstream state dicts load as they are. Differences are in how a
generation step runs, never in what it computes:

- the self-attention cache is preallocated once per generation (upstream grows it with
  `torch.cat` at every step);
- the cross-attention keys/values of the condition are projected once per generation
  (upstream projects them again in every layer at every step);
- attention is `scaled_dot_product_attention` for every config.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def create_sin_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embedding, cosines in the first half of the channels, sines in the second.

    Args:
        positions: [B, T, 1] integer positions.
        dim: embedding width (even).
    Returns:
        [B, T, dim] embedding.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even width, got {dim}")
    half = dim // 2
    positions = positions.to(dtype)
    # The exponent is arange/(half-1), not arange/half: kept as the released models were trained.
    freqs = torch.arange(half, device=positions.device, dtype=dtype).view(1, 1, -1)
    period = torch.full([], max_period, device=positions.device, dtype=dtype)
    phase = positions / (period ** (freqs / (half - 1)))
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


# Which form each few-row product takes on this machine, measured by `choose_matmul_form`:
# (rows, dtype, device type, threads) -> True for `W @ x.T`, False for `F.linear(x, W)`.
MATMUL_FORMS: dict[tuple, bool] = {}


def _form_key(rows: int, dtype: torch.dtype, device: torch.device) -> tuple:
    return rows, dtype, device.type, torch.get_num_threads()


def choose_matmul_form(weights: list[torch.Tensor], rows: int, reps: int = 5) -> bool:
    """Time `F.linear(x, W)` against `W @ x.T` for `rows` rows over `weights`; remember the faster.

    A generation step multiplies a few rows (batch x 2 for CFG) by every weight matrix, so its
    cost is streaming the weights from memory, and which form streams them faster depends on the
    BLAS, the CPU and the dtype. Measured on an AVX-512 Xeon (2 threads): fp32 at 2 rows,
    `F.linear` 41 GB/s vs `W @ x.T` 20; at 8 rows 14 vs 20; bf16 at 2 rows 27 vs 39 (an EPYC
    showed the opposite in fp32). So it is measured once per (rows, dtype, threads), over several
    matrices so that they stream from memory as in a real step (one would sit in cache),
    alternating the forms and comparing medians. CPU inference only; the forms differ in rounding.
    """
    weight = weights[0]
    key = _form_key(rows, weight.dtype, weight.device)
    if key not in MATMUL_FORMS:
        if weight.device.type != "cpu":
            MATMUL_FORMS[key] = False
            return False
        # A private generator: sampling after this must see the global RNG untouched.
        x = torch.randn(rows, weight.shape[1], generator=torch.Generator().manual_seed(0)).to(weight.dtype)
        times: dict[bool, list[float]] = {False: [], True: []}
        with torch.no_grad():
            for _ in range(reps):
                for form in (False, True):
                    start = time.perf_counter()
                    for w in weights:
                        (w @ x.T) if form else F.linear(x, w)
                    times[form].append(time.perf_counter() - start)
        # `W @ x.T` only when clearly faster: a tie keeps upstream's form (and its rounding).
        MATMUL_FORMS[key] = statistics.median(times[True]) < 0.9 * statistics.median(times[False])
    return MATMUL_FORMS[key]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, in the form `choose_matmul_form` measured fastest for this many rows (if it did)."""
    rows = x.numel() // x.shape[-1]
    if x.requires_grad or not MATMUL_FORMS.get(_form_key(rows, x.dtype, x.device), False):
        return F.linear(x, weight, bias)
    out = (weight @ x.reshape(rows, -1).T).T
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], weight.shape[0])


def create_norm_fn(norm_type: str, dim: int, **kwargs) -> nn.Module:
    if norm_type != "layer_norm":
        raise ValueError(f"unknown norm {norm_type!r}; only 'layer_norm' is supported")
    return nn.LayerNorm(dim, eps=1e-5, **kwargs)


class LayerScale(nn.Module):
    """Per-channel residual scale (`layer_scale` in the config)."""

    def __init__(self, channels: int, init: float = 1e-4, device=None, dtype=None):
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), init, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


@dataclass
class KVCache:
    """Self-attention keys/values of one layer, preallocated for a whole generation.

    `keys`/`values` are [B, H, capacity, D]; positions `[0, length)` are filled.
    """

    keys: torch.Tensor
    values: torch.Tensor
    length: int = 0

    @classmethod
    def empty(cls, batch: int, heads: int, capacity: int, head_dim: int, like: torch.Tensor) -> "KVCache":
        shape = (batch, heads, capacity, head_dim)
        return cls(like.new_empty(shape), like.new_empty(shape))

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, H, t, D] after what is cached; return all cached keys and values."""
        end = self.length + k.shape[2]
        if end > self.keys.shape[2]:
            raise RuntimeError(f"KV cache holds {self.keys.shape[2]} steps, {end} asked")
        self.keys[:, :, self.length:end] = k
        self.values[:, :, self.length:end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class StreamingMultiheadAttention(nn.Module):
    """Multi-head attention with upstream's parameter layout (`in_proj_weight` = [Wq; Wk; Wv]).

    Args:
        embed_dim: model width.
        num_heads: number of heads.
        dropout: attention dropout (training only).
        bias: biases on the projections.
        causal: causal self-attention.
        cross_attention: queries from `query`, keys/values from the condition.
        Other upstream arguments (custom, memory_efficient, attention_as_float32, safe_streaming)
        select kernels upstream; here attention always runs through SDPA, so they are accepted
        and ignored.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 causal: bool = False, cross_attention: bool = False, device=None, dtype=None, **_ignored):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.causal = causal
        self.cross_attention = cross_attention
        factory = {"device": device, "dtype": dtype}
        in_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias, **factory)
        self.in_proj_weight = in_proj.weight
        self.in_proj_bias = in_proj.bias
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        if bias:  # zero biases at init, as torch's MultiheadAttention does
            self.in_proj_bias.data.zero_()
            self.out_proj.bias.data.zero_()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Upstream configs with custom=False keep these weights under an `mha.` submodule.
        for key in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
            if prefix + "mha." + key in state_dict:
                state_dict[prefix + key] = state_dict.pop(prefix + "mha." + key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # [B, T, C] -> [B, H, T, D]

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys and values of a condition [B, L, C] -> 2 x [B, H, L, D]."""
        w, b = self.in_proj_weight, self.in_proj_bias
        d = self.embed_dim
        k = F.linear(source, w[d:2 * d], None if b is None else b[d:2 * d])
        v = F.linear(source, w[2 * d:], None if b is None else b[2 * d:])
        return self._heads(k), self._heads(v)

    def forward(self, query: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache: KVCache | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend.

        Args:
            query: [B, T, C].
            kv: cross-attention only: projected keys/values from `project_kv`.
            cache: self-attention only: the layer's KV cache during generation.
            attn_mask: optional additive/boolean mask [T, S] replacing the causal one.
        Returns:
            [B, T, C].
        """
        w, b = self.in_proj_weight, self.in_proj_bias
        d = self.embed_dim
        is_causal = False
        if self.cross_attention:
            q = self._heads(linear(query, w[:d], None if b is None else b[:d]))
            k, v = kv
        else:
            q, k, v = linear(query, w, b).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
            past = 0
            if cache is not None:
                past = cache.length
                k, v = cache.append(k, v)
            steps = q.shape[2]
            if self.causal and attn_mask is None and steps > 1:
                if past == 0:
                    is_causal = True
                else:  # several new steps after cached ones: causal mask offset by `past`
                    attn_mask = torch.ones(steps, past + steps, dtype=torch.bool, device=q.device).tril(past)
        p = self.dropout if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=is_causal)
        return linear(x.transpose(1, 2).flatten(2), self.out_proj.weight, self.out_proj.bias)


class StreamingTransformerLayer(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; pre- or post-norm.

    Parameter names follow upstream (which subclasses `nn.TransformerEncoderLayer`):
    `self_attn`, `cross_attention`, `linear1`, `linear2`, `norm1`, `norm2`, `norm_cross`,
    `layer_scale_{1,2,cross}`.
    """

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 bias_ff: bool = True, bias_attn: bool = True, causal: bool = False,
                 cross_attention: bool = False, layer_scale: float | None = None,
                 attention_dropout: float | None = None, norm: str = "layer_norm", norm_first: bool = False,
                 activation: str = "relu", device=None, dtype=None, **attn_kwargs):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        attn = {"embed_dim": d_model, "num_heads": num_heads, "bias": bias_attn,
                "dropout": dropout if attention_dropout is None else attention_dropout, **attn_kwargs}
        self.self_attn = StreamingMultiheadAttention(causal=causal, **attn, **factory)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias_ff, **factory)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias_ff, **factory)
        self.dropout = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.norm_first = norm_first
        self.norm1 = create_norm_fn(norm, d_model, **factory)
        self.norm2 = create_norm_fn(norm, d_model, **factory)

        def scale() -> nn.Module:
            return nn.Identity() if layer_scale is None else LayerScale(d_model, layer_scale, **factory)

        self.layer_scale_1, self.layer_scale_2 = scale(), scale()
        self.cross_attention: StreamingMultiheadAttention | None = None
        if cross_attention:
            self.cross_attention = StreamingMultiheadAttention(cross_attention=True, **attn, **factory)
            self.norm_cross = nn.LayerNorm(d_model, eps=1e-5, **factory)
            self.layer_scale_cross = scale()

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(self.activation(linear(x, self.linear1.weight, self.linear1.bias)))
        return self.dropout(linear(hidden, self.linear2.weight, self.linear2.bias))

    def _sa(self, x: torch.Tensor, cache: KVCache | None, mask: torch.Tensor | None) -> torch.Tensor:
        return self.dropout(self.self_attn(x, cache=cache, attn_mask=mask))

    def _ca(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.dropout(self.cross_attention(x, kv=kv))

    def forward(self, x: torch.Tensor, cross_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache: KVCache | None = None, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        if (self.cross_attention is None) != (cross_kv is None):
            raise ValueError("cross-attention keys/values must be given exactly when the layer has cross-attention")
        if self.norm_first:
            x = x + self.layer_scale_1(self._sa(self.norm1(x), cache, src_mask))
            if cross_kv is not None:
                x = x + self.layer_scale_cross(self._ca(self.norm_cross(x), cross_kv))
            return x + self.layer_scale_2(self._ff(self.norm2(x)))
        x = self.norm1(x + self.layer_scale_1(self._sa(x, cache, src_mask)))
        if cross_kv is not None:
            x = self.norm_cross(x + self.layer_scale_cross(self._ca(x, cross_kv)))
        return self.norm2(x + self.layer_scale_2(self._ff(x)))


def _activation(name: str):
    table = {"relu": F.relu, "gelu": F.gelu}
    if name not in table:
        raise ValueError(f"activation {name!r} is not supported; use one of {sorted(table)}")
    return table[name]


class StreamingTransformer(nn.Module):
    """A stack of `StreamingTransformerLayer` with sinusoidal positions added to the input.

    Args:
        d_model, num_heads, num_layers, dim_feedforward: sizes.
        positional_embedding: only 'sin' (what every released MusicGen uses).
        max_period, positional_scale: of the sinusoidal embedding.
        **kwargs: passed to each layer (causal, cross_attention, norm_first, biases, ...).
    """

    def __init__(self, d_model: int, num_heads: int, num_layers: int, dim_feedforward: int = 2048,
                 positional_embedding: str = "sin", max_period: float = 10_000, positional_scale: float = 1.0,
                 **kwargs):
        super().__init__()
        if positional_embedding != "sin":
            raise ValueError(f"positional_embedding {positional_embedding!r} is not supported; "
                             "audiocraft_patched implements 'sin', the one released MusicGen models use")
        self.max_period = max_period
        self.positional_scale = positional_scale
        self.layers = nn.ModuleList([StreamingTransformerLayer(d_model, num_heads, dim_feedforward, **kwargs)
                                     for _ in range(num_layers)])

    def positional(self, offset: int, steps: int, batch: int, x: torch.Tensor) -> torch.Tensor:
        """Sinusoidal embedding of positions [offset, offset + steps) as [B, steps, C]."""
        positions = torch.arange(offset, offset + steps, device=x.device).view(1, -1, 1).expand(batch, -1, -1)
        # float32 as upstream; in low precision, computed in float32 then rounded once.
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        return create_sin_embedding(positions, x.shape[-1], max_period=self.max_period, dtype=dtype).to(x.dtype)

    def project_cross_kv(self, source: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys/values of the condition for every layer, computed once per generation."""
        return [layer.cross_attention.project_kv(source) for layer in self.layers]

    def forward(self, x: torch.Tensor, cross_attention_src: torch.Tensor | None = None,
                src_mask: torch.Tensor | None = None, *, cross_kv: list | None = None,
                caches: list[KVCache] | None = None, offset: int = 0, pos_emb: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Run the stack.

        Args:
            x: [B, T, C] input embeddings.
            cross_attention_src: [B, L, C] condition, projected here (training / one-shot use).
            src_mask: optional attention mask [T, T] instead of the causal one.
            cross_kv: the condition's keys/values per layer, from `project_cross_kv` (generation).
            caches: per-layer KV caches (generation); `offset` is then the position of x[:, 0].
            pos_emb: precomputed positional embedding for these positions (generation).
        Returns:
            [B, T, C].
        """
        B, T, _ = x.shape
        if pos_emb is None:
            pos_emb = self.positional(offset, T, B, x)
        x = x + self.positional_scale * pos_emb
        if cross_kv is None and cross_attention_src is not None:
            cross_kv = self.project_cross_kv(cross_attention_src)
        for i, layer in enumerate(self.layers):
            x = layer(x, None if cross_kv is None else cross_kv[i], None if caches is None else caches[i], src_mask)
        return x
