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

Upstream's streaming API (`with transformer.streaming(): transformer(chunk)`, `get_streaming_state`,
`set_streaming_state`, `flush`) is kept, built on the same explicit `KVCache` (`streaming.py`).
Argument errors that upstream asserts raise `ValueAssertionError`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ValueAssertionError
from .matmul_forms import PLAIN, MatmulForms
from .streaming import KVCache, StreamingModule  # noqa: F401  (KVCache: generation's caches, lm.py)

_EFFICIENT_ATTENTION_BACKENDS = ("torch", "xformers")


def set_efficient_attention_backend(backend: str = "torch") -> None:
    """Upstream's switch between xformers and torch kernels for `memory_efficient=True`.

    Accepted for compatibility and checked; it changes nothing here: every attention runs through
    torch's `scaled_dot_product_attention`, which picks its own memory-efficient kernels.
    """
    if backend not in _EFFICIENT_ATTENTION_BACKENDS:
        raise ValueAssertionError(f"unknown attention backend {backend!r}; known: {_EFFICIENT_ATTENTION_BACKENDS}")


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


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                       is_causal: bool = False, dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v on [B, H, T, D] inputs, as separate products.

    Upstream runs `custom=True, memory_efficient=False` attention this way, not through SDPA's
    fused kernel, which rounds differently (and differently for one query than for several).
    `attn_mask`: boolean (True = may attend) or additive, [T, S].
    """
    scores = torch.einsum("bhtd,bhsd->bhts", q / q.shape[-1] ** 0.5, k)
    if is_causal:
        attn_mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    weights = torch.softmax(scores, dim=-1)
    if dropout_p:
        weights = F.dropout(weights, dropout_p)
    return torch.einsum("bhts,bhsd->bhtd", weights.to(v), v)


class StreamingMultiheadAttention(StreamingModule):
    """Multi-head attention with upstream's parameter layout (`in_proj_weight` = [Wq; Wk; Wv]).

    Args:
        embed_dim: model width.
        num_heads: number of heads.
        dropout: attention dropout (training only).
        bias: biases on the projections.
        causal: causal self-attention.
        past_context: causal only: a query sees at most this many steps back (None: all).
        custom, memory_efficient: select kernels as upstream: `custom=True` alone gives its explicit
            products (`explicit_attention`), anything else SDPA. The weights are always on this
            module (upstream's `custom=False` keeps them in an `nn.MultiheadAttention` named `mha`:
            such state dicts load, and `.mha` names this module).
        attention_as_float32: compute the attention itself in float32 (projections in the weights' dtype).
        cross_attention: queries from `query`, keys/values from the condition.
        qk_layer_norm: LayerNorm on queries and keys before the product.
        kv_repeat: self-attention keys/values have `num_heads // kv_repeat` heads, each shared by
            `kv_repeat` query heads.
        rope, safe_streaming: upstream options; rotary embeddings are not supported.
    """

    matmul_forms: MatmulForms = PLAIN  # its transformer's, once in one (`use_matmul_forms`)

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 causal: bool = False, past_context: int | None = None, custom: bool = False,
                 memory_efficient: bool = False, attention_as_float32: bool = False, rope=None,
                 cross_attention: bool = False, safe_streaming: bool = True, qk_layer_norm: bool = False,
                 kv_repeat: int = 1, device=None, dtype=None, **_ignored):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueAssertionError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if past_context is not None and not causal:
            raise ValueAssertionError("past_context limits a causal attention: give causal=True")
        if cross_attention and causal:
            raise ValueAssertionError("cross-attention cannot be causal: keys come from the condition")
        if rope is not None:
            raise NotImplementedError("rotary embeddings are not ported: no supported model uses them")
        if num_heads % kv_repeat or (kv_repeat > 1 and cross_attention):
            raise ValueAssertionError(f"kv_repeat={kv_repeat} must divide num_heads={num_heads} "
                                      "and is for self-attention only")
        if (kv_repeat > 1 or qk_layer_norm) and not (custom or memory_efficient):
            raise ValueAssertionError("kv_repeat > 1 and qk_layer_norm need custom=True or memory_efficient=True, "
                                      "as upstream")
        if qk_layer_norm and kv_repeat > 1:
            raise ValueAssertionError("qk_layer_norm does not combine with kv_repeat > 1")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.causal = causal
        self.past_context = past_context
        self.cross_attention = cross_attention
        self.custom = custom or memory_efficient
        self.memory_efficient = memory_efficient
        self.attention_as_float32 = attention_as_float32
        self.kv_repeat = kv_repeat
        self.kv_heads = num_heads // kv_repeat
        factory = {"device": device, "dtype": dtype}
        kv_dim = embed_dim // kv_repeat
        if self.custom:
            in_proj = nn.Linear(embed_dim, embed_dim + 2 * kv_dim, bias=bias, **factory)
            self.in_proj_weight = in_proj.weight
            self.in_proj_bias = in_proj.bias
            self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
            if bias:  # zero biases at init, as torch's MultiheadAttention does
                self.in_proj_bias.data.zero_()
                self.out_proj.bias.data.zero_()
        else:  # upstream keeps torch's module here: take its weights, so a seeded init draws as upstream's
            mha = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, bias=bias, batch_first=True, **factory)
            self.in_proj_weight, self.in_proj_bias, self.out_proj = mha.in_proj_weight, mha.in_proj_bias, mha.out_proj
        self.qk_layer_norm = qk_layer_norm
        if qk_layer_norm:
            self.q_layer_norm = nn.LayerNorm(embed_dim, **factory)
            self.k_layer_norm = nn.LayerNorm(embed_dim, **factory)

    @property
    def mha(self) -> "StreamingMultiheadAttention":
        """Upstream's `custom=False` submodule holding the weights: here, this module itself."""
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Upstream configs with custom=False keep these weights under an `mha.` submodule.
        for key in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
            if prefix + "mha." + key in state_dict:
                state_dict[prefix + key] = state_dict.pop(prefix + "mha." + key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # [B, T, C] -> [B, H, T, D]

    def project_kv(self, source: torch.Tensor, value: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys and values of a condition [B, L, C] -> 2 x [B, H, L, D].

        `value`: a separate source for the values (upstream's `forward(query, key, value)`).
        """
        w, b = self.in_proj_weight, self.in_proj_bias
        d = self.embed_dim
        # PLAIN: `F.linear` for dense weights (as upstream), the quantized product for quantized ones.
        k = PLAIN.linear(source, w[d:2 * d], None if b is None else b[d:2 * d])
        v = PLAIN.linear(source if value is None else value, w[2 * d:], None if b is None else b[2 * d:])
        if self.qk_layer_norm:
            k = self.k_layer_norm(k)
        return self._heads(k), self._heads(v)

    def _self_qkv(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention q [B, H, T, D] and k, v [B, H / kv_repeat, T, D], from one fused product."""
        projected = self.matmul_forms.linear(query, self.in_proj_weight, self.in_proj_bias)
        if self.kv_repeat == 1 and not self.qk_layer_norm:
            q, k, v = projected.unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
            return q, k, v
        d, kv_dim = self.embed_dim, self.embed_dim // self.kv_repeat
        q, k, v = projected.split([d, kv_dim, kv_dim], dim=-1)
        if self.qk_layer_norm:
            q, k = self.q_layer_norm(q), self.k_layer_norm(k)
        return self._heads(q), *(x.unflatten(-1, (self.kv_heads, -1)).transpose(1, 2) for x in (k, v))

    def _mask(self, steps: int, past: int, device: torch.device) -> torch.Tensor:
        """[steps, past + steps] boolean: query i (at position past + i) may see key j."""
        delta = torch.arange(past, past + steps, device=device).view(-1, 1) - torch.arange(past + steps, device=device)
        valid = delta >= 0
        if self.past_context is not None:
            valid &= delta <= self.past_context
        return valid

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                key_padding_mask=None, need_weights: bool = False, attn_mask: torch.Tensor | None = None,
                average_attn_weights: bool = True, is_causal: bool = False, *,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None, cache: KVCache | None = None):
        """Attend.

        Two call forms. Upstream's, `attn(query, key, value)`, returns upstream's `(output, None)`
        (self-attention takes key and value equal to query). Ours, `attn(query, kv=..., cache=...)`,
        returns the output alone: the generation path, with precomputed keys/values.

        Args:
            query: [B, T, C].
            key, value: upstream's form: [B, S, C] (the condition, for cross-attention).
            attn_mask: optional additive/boolean mask [T, S] replacing the causal one.
            kv: cross-attention only: projected keys/values from `project_kv`.
            cache: self-attention only: the layer's KV cache during generation.
        Returns:
            [B, T, C], or `(that, None)` in upstream's call form.
        """
        upstream_form = key is not None
        if key_padding_mask is not None or need_weights or is_causal:
            raise ValueAssertionError("key_padding_mask, need_weights and is_causal are not supported "
                                      "(causality is set in the constructor), as upstream's custom attention")
        if upstream_form and value is None:
            raise ValueAssertionError("give key and value together")
        w, b = self.in_proj_weight, self.in_proj_bias
        d = self.embed_dim
        in_dtype = query.dtype
        if self.attention_as_float32:  # projections in the weights' dtype, attention in float32
            query = query.to(w.dtype)
        is_causal = False
        if self.cross_attention:
            if upstream_form:
                kv = self.project_kv(key.to(query.dtype), value.to(query.dtype))
            if kv is None:
                raise ValueAssertionError("cross-attention needs the condition's keys and values")
            q = self.matmul_forms.linear(query, w[:d], None if b is None else b[:d])
            if self.qk_layer_norm:
                q = self.q_layer_norm(q)
            q = self._heads(q)
            k, v = kv
        else:
            if upstream_form and (key.shape != query.shape or value.shape != query.shape):
                raise ValueAssertionError("self-attention takes key and value equal to query")
            q, k, v = self._self_qkv(query)
            if cache is None and self._stream is not None:
                cache, = self._stream_caches(1, q.shape[2], q.shape[0], self.kv_heads, q.shape[3], k)
            past = 0
            if cache is not None and cache.position is not None:  # fixed-shape step: one query, masked
                k, v = cache.write(k, v)
                attn_mask = cache.visible
            elif cache is not None:
                past = cache.length
                k, v = cache.append(k, v)
            if self.kv_repeat > 1:  # each key/value head serves kv_repeat consecutive query heads
                k, v = (x.repeat_interleave(self.kv_repeat, dim=1) for x in (k, v))
            steps = q.shape[2]
            if self.causal and attn_mask is None:
                if self.past_context is not None and past + steps > self.past_context + 1:
                    attn_mask = self._mask(steps, past, q.device)
                elif steps > 1:
                    if past == 0:
                        is_causal = True
                    else:  # several new steps after cached ones: causal mask offset by `past`
                        attn_mask = self._mask(steps, past, q.device)
        if self.attention_as_float32:
            q, k, v = q.float(), k.float(), v.float()
        p = self.dropout if self.training else 0.0
        if self.custom and not self.memory_efficient:  # upstream's own attention: explicit products
            x = explicit_attention(q, k, v, attn_mask, is_causal, p)
        else:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=is_causal)
        x = self.matmul_forms.linear(x.transpose(1, 2).flatten(2).to(w.dtype), self.out_proj.weight,
                                     self.out_proj.bias).to(in_dtype)
        return (x, None) if upstream_form else x


class StreamingTransformerLayer(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; pre- or post-norm.

    Parameter names follow upstream (which subclasses `nn.TransformerEncoderLayer`):
    `self_attn`, `cross_attention`, `linear1`, `linear2`, `norm1`, `norm2`, `norm_cross`,
    `layer_scale_{1,2,cross}`.
    """

    matmul_forms: MatmulForms = PLAIN  # its transformer's, once in one (`use_matmul_forms`)

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 bias_ff: bool = True, bias_attn: bool = True, causal: bool = False,
                 cross_attention: bool = False, layer_scale: float | None = None,
                 attention_dropout: float | None = None, norm: str = "layer_norm", norm_first: bool = False,
                 activation: str = "relu", past_context: int | None = None, qk_layer_norm: bool = False,
                 qk_layer_norm_cross: bool = False, kv_repeat: int = 1, device=None, dtype=None, **attn_kwargs):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        # Upstream's layer is an `nn.TransformerEncoderLayer` whose attention and feed-forward it then
        # replaces: its init draws those first weights and drops them. Draw them too, so that a seeded
        # random init equals upstream's weight for weight (nothing is drawn on the meta device).
        nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward, batch_first=True, **factory)
        attn = {"embed_dim": d_model, "num_heads": num_heads, "bias": bias_attn,
                "dropout": dropout if attention_dropout is None else attention_dropout, **attn_kwargs}
        # As upstream: causality, past context, kv_repeat and qk_layer_norm are the self-attention's.
        self.self_attn = StreamingMultiheadAttention(causal=causal, past_context=past_context, kv_repeat=kv_repeat,
                                                     qk_layer_norm=qk_layer_norm, **attn, **factory)
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
            self.cross_attention = StreamingMultiheadAttention(cross_attention=True, qk_layer_norm=qk_layer_norm_cross,
                                                               **attn, **factory)
            self.norm_cross = nn.LayerNorm(d_model, eps=1e-5, **factory)
            self.layer_scale_cross = scale()

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(self.activation(self.matmul_forms.linear(x, self.linear1.weight, self.linear1.bias)))
        return self.dropout(self.matmul_forms.linear(hidden, self.linear2.weight, self.linear2.bias))

    def use_matmul_forms(self, forms: MatmulForms) -> None:
        """Take the product forms of the transformer this layer belongs to (and give them to its attentions)."""
        self.matmul_forms = forms
        for attention in (self.self_attn, self.cross_attention):
            if attention is not None:
                attention.matmul_forms = forms

    def _sa(self, x: torch.Tensor, cache: KVCache | None, mask: torch.Tensor | None) -> torch.Tensor:
        return self.dropout(self.self_attn(x, cache=cache, attn_mask=mask))

    def _ca(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.dropout(self.cross_attention(x, kv=kv))

    def forward(self, x: torch.Tensor, cross_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache: KVCache | None = None, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        if (self.cross_attention is None) != (cross_kv is None):
            raise ValueAssertionError("cross-attention keys/values must be given exactly when the layer has "
                                      "cross-attention (cross_attention_src=...)")
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


class StreamingTransformer(StreamingModule):
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
        self.matmul_forms = MatmulForms()  # this model's product forms, shared by its layers (see matmul_forms.py)
        for layer in self.layers:
            layer.use_matmul_forms(self.matmul_forms)

    def positional(self, offset: int, steps: int, batch: int, x: torch.Tensor) -> torch.Tensor:
        """Sinusoidal embedding of positions [offset, offset + steps) as [B, steps, C]."""
        positions = torch.arange(offset, offset + steps, device=x.device).view(1, -1, 1).expand(batch, -1, -1)
        # float32 as upstream; in low precision, computed in float32 then rounded once.
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        return create_sin_embedding(positions, x.shape[-1], max_period=self.max_period, dtype=dtype).to(x.dtype)

    def project_cross_kv(self, source: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys/values of the condition for every layer, computed once per generation."""
        if any(layer.cross_attention is None for layer in self.layers):
            raise ValueAssertionError("cross_attention_src given to a transformer without cross-attention "
                                      "(build it with cross_attention=True)")
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
        stream = self._stream if caches is None else None
        if stream is not None:  # inside `with self.streaming():` this call continues the last one
            attn = self.layers[0].self_attn
            caches = self._stream_caches(len(self.layers), T, B, attn.kv_heads, attn.embed_dim // attn.num_heads, x)
            offset = stream.offset
            stream.offset += T
        if pos_emb is None:
            pos_emb = self.positional(offset, T, B, x)
        x = x + self.positional_scale * pos_emb
        if cross_kv is None and cross_attention_src is not None:
            cross_kv = self.project_cross_kv(cross_attention_src)
        for i, layer in enumerate(self.layers):
            x = layer(x, None if cross_kv is None else cross_kv[i], None if caches is None else caches[i], src_mask)
        return x
