"""`LMModel`: the MusicGen transformer LM over K parallel codebooks.

Mirrors `audiocraft/models/lm.py` (audiocraft 1.3.0): same constructor, parameter names
(`emb.{k}`, `transformer.layers.{i}...`, `out_norm`, `linears.{k}`, `condition_provider...`),
`forward` / `compute_predictions` / `generate` signatures and sampling numerics, so the same
weights, inputs and seed give the same tokens. Generation runs on our own loop: a preallocated
KV cache per CFG stream, cross-attention keys/values of the conditions projected once, logits of
the last position only.

One deliberate difference: with `two_step_cfg`, upstream mixes the two passes with the model's
default `cfg_coef` and ignores the one passed to `generate`; we use the one passed.
"""
from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from ..modules.codebooks_patterns import CodebooksPatternProvider
from ..modules.conditioners import (
    AttributeDropout,
    ClassifierFreeGuidanceDropout,
    ConditionFuser,
    ConditioningAttributes,
    ConditioningProvider,
    ConditionType,
)
from ..modules.transformer import KVCache, StreamingTransformer, create_norm_fn

ConditionTensors = dict[str, ConditionType]

# Transformer options that only choose training schedules upstream; accepted, unused. (`custom`,
# `memory_efficient`, `attention_as_float32` go to the attention: kernel, numerics and init as upstream.)
_IGNORED = ("checkpointing", "lr", "weight_decay", "safe_streaming", "q_modeling")
# Options we do not implement, with the value that is fine.
_UNSUPPORTED = {"past_context": None, "xpos": False, "qk_layer_norm": False, "qk_layer_norm_cross": False,
                "kv_repeat": 1}


def apply_cfg(cond: torch.Tensor, uncond: torch.Tensor, coef: float) -> torch.Tensor:
    """Classifier-free guidance: move the logits away from the unconditional ones."""
    return uncond + (cond - uncond) * coef


def sample_top_k(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Sample from the k most probable tokens; probs [..., card] -> tokens [..., 1].

    k above the codebook size keeps every token (upstream raises there).
    """
    kth = torch.topk(probs, min(k, probs.shape[-1]), dim=-1).values[..., [-1]]
    probs = probs * (probs >= kth).float()
    return multinomial(probs / probs.sum(dim=-1, keepdim=True))


def sample_top_p(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Sample from the smallest set of tokens whose probability reaches p (nucleus)."""
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    beyond = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > p
    sorted_probs = sorted_probs * (~beyond).float()
    picked = multinomial(sorted_probs / sorted_probs.sum(dim=-1, keepdim=True))
    return torch.gather(order, -1, picked)


def multinomial(probs: torch.Tensor) -> torch.Tensor:
    """One draw per row of [..., card] probabilities -> [..., 1] (global RNG, as upstream)."""
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), num_samples=1)
    return flat.reshape(*probs.shape[:-1], 1)


def check_finite(values: torch.Tensor, what: str, step: int | None) -> None:
    """Refuse NaN/inf in [B, K, card] logits or probabilities, naming the step and the first bad row.

    Without it, sampling dies in a torch assert ("probability tensor contains either inf, nan...",
    a device-side assert on CUDA) and greedy decoding silently picks token 0. One reduction per
    step; the rows are only looked for once it has failed.
    """
    if bool(torch.isfinite(values).all()):
        return
    b, k = (int(i) for i in (~torch.isfinite(values)).any(-1).nonzero()[0])
    at = "" if step is None else f"at sequence step {step}, "
    raise FloatingPointError(f"{at}the {what} of sample {b}, codebook {k} are NaN or infinite: the model's weights, "
                             "cfg_coef or temperature overflow (or a float16 run does); check the checkpoint with "
                             "`inspect`, lower cfg_coef, raise temperature, or use float32")


def sample_next_token(logits: torch.Tensor, use_sampling: bool, temp: float, top_k: int, top_p: float,
                      step: int | None = None) -> torch.Tensor:
    """logits [B, K, card] -> tokens [B, K, 1]: greedy, or softmax(logits / temp) with top-p / top-k.

    Non-finite values raise a FloatingPointError naming `step` (see `check_finite`).
    """
    if not use_sampling or temp <= 0:
        check_finite(logits, "logits", step)
        return torch.argmax(logits, dim=-1, keepdim=True)
    probs = torch.softmax(logits / temp, dim=-1)
    check_finite(probs, f"probabilities (softmax of logits / temperature {temp:g})", step)
    if top_p > 0:
        return sample_top_p(probs, top_p)
    if top_k > 0:
        return sample_top_k(probs, top_k)
    return multinomial(probs)


def init_layer(m: nn.Module, method: str, init_depth: int | None = None, zero_bias_init: bool = False):
    """Upstream's 'gaussian' (truncated at 3 std) or 'uniform' init with std 1/sqrt(fan_in)."""
    if isinstance(m, nn.Linear):
        fan_in, depth = m.in_features, init_depth
    elif isinstance(m, nn.Embedding):
        fan_in, depth = m.embedding_dim, None
    else:
        return
    std = 1 / math.sqrt(fan_in) / (math.sqrt(2 * depth) if depth is not None else 1)
    if method == "gaussian":
        nn.init.trunc_normal_(m.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)
    elif method == "uniform":
        bound = math.sqrt(3) * std
        nn.init.uniform_(m.weight, -bound, bound)
    else:
        raise ValueError(f"weight_init must be 'gaussian' or 'uniform', got {method!r}")
    if zero_bias_init and isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)


@dataclass
class LMOutput:
    logits: torch.Tensor  # [B, K, T, card], aligned with the input codes (no shift needed)
    mask: torch.Tensor  # [B, K, T], True where the logits are valid


@dataclass
class _Stream:
    """One batch the LM runs during generation (CFG runs one of 2B rows, or two of B)."""

    conditions: ConditionTensors
    caches: list[KVCache] | None = None
    cross_kv: list | None = None
    offset: int = 0  # positions fed so far (prepended conditions included)
    positions: torch.Tensor | None = None  # sinusoidal embedding of every position of the generation
    # Fixed-shape steps (compile_step): the caches' shared write position [1], visible slots [1, capacity]
    # and the attention window (a prefix view of `visible`, whole blocks of _WINDOW_BLOCK).
    position: torch.Tensor | None = None
    visible: torch.Tensor | None = None
    window: torch.Tensor | None = None
    single_steps: int = 0  # fixed-shape single steps run so far (the first one runs eager)


def _decode(lm: "LMModel", x: torch.Tensor, pos_emb: torch.Tensor, cross_kv: list | None,
            caches: list[KVCache]) -> torch.Tensor:
    """The transformer and heads on fused inputs x [b, s, C]: float32 logits of the last position [b, K, card].

    A module-level function taking the LM, so that the one compiled version (`_compiled_decode`)
    serves every LM (a deep-copied model included): dynamo guards on which LM it is given.
    """
    out = lm.transformer(x, cross_kv=cross_kv, caches=caches, pos_emb=pos_emb)
    return lm._heads(out[:, -1:])[:, :, 0].float()  # sampling in float32 whatever the LM's dtype


_CAPACITY_BUCKET = 256  # fixed-shape caches are rounded up to this: one compiled graph per bucket, not per length
_WINDOW_BLOCK = 64  # a fixed-shape step attends to the filled slots rounded up to this, not to the whole capacity
_compiled_decode: Callable | None = None  # torch.compile(_decode) under the raised limit below, made at first use
# Dynamo keeps one graph per batch size, capacity bucket and weight mode, all on `_decode`'s code, and past
# its recompile_limit (8 by default) it runs that frame eager with only a log line: a process with a few
# quantized models, or long and short generations, lost the compiled step (seen in the bench: 5 compiled
# variants at 2 lengths).
_RECOMPILE_LIMIT = 64


def compiler_note() -> str | None:
    """Why the decode step cannot be compiled here (no C++ compiler for inductor's CPU code), or None."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as error:  # the lookup raises when no compiler is found (or inductor is missing)
        return f"no C++ compiler for torch.compile ({type(error).__name__}: {error})"
    return None


class LMModel(nn.Module):
    """Transformer LM on K streams of codes, conditioned through `condition_provider` + `fuser`.

    Args:
        pattern_provider: codebook interleaving (MusicGen: delay).
        condition_provider: conditioners by attribute.
        fuser: how conditions enter the LM.
        n_q: number of codebooks K.
        card: codebook size; token `card` is the special (not-yet-known) token.
        dim, num_heads, hidden_scale: transformer width, heads, feed-forward ratio.
        norm, norm_first: normalisation type and pre-norm.
        emb_lr: upstream's embedding learning rate (kept on the embeddings as `lr`).
        bias_proj: biases on the output heads.
        weight_init, depthwise_init, zero_bias_init: upstream's initialisation.
        cfg_dropout: probability of dropping all conditions while training.
        cfg_coef: default classifier-free guidance coefficient.
        attribute_dropout: per-attribute dropout while training.
        two_step_cfg: run conditional and unconditional batches separately.
        init_weights: False when a checkpoint replaces every weight next: the LM's own layers are
            then made on the meta device (no random draws, no memory) and given empty storage,
            which a strict `load_state_dict` fills (the conditioners come built already).
        **kwargs: transformer options (num_layers, causal, cross_attention, bias_ff, ...).
    """

    def __init__(self, pattern_provider: CodebooksPatternProvider, condition_provider: ConditioningProvider,
                 fuser: ConditionFuser, n_q: int = 8, card: int = 1024, dim: int = 128, num_heads: int = 8,
                 hidden_scale: int = 4, norm: str = "layer_norm", norm_first: bool = False,
                 emb_lr: float | None = None, bias_proj: bool = True, weight_init: str | None = None,
                 depthwise_init: str | None = None, zero_bias_init: bool = False, cfg_dropout: float = 0,
                 cfg_coef: float = 1.0, attribute_dropout: dict | None = None, two_step_cfg: bool = False,
                 init_weights: bool = True, **kwargs):
        super().__init__()
        for key in _IGNORED:
            kwargs.pop(key, None)
        for key, fine in _UNSUPPORTED.items():
            if kwargs.pop(key, fine) != fine:
                raise ValueError(f"transformer option {key} is not supported by audiocraft_patched "
                                 f"(only {key}={fine}, as in the released MusicGen configs)")
        self.cfg_coef = cfg_coef
        self.cfg_dropout = ClassifierFreeGuidanceDropout(p=cfg_dropout)
        self.att_dropout = AttributeDropout(p=attribute_dropout or {})
        self.condition_provider = condition_provider
        self.fuser = fuser
        self.card = card
        self.n_q = n_q
        self.dim = dim
        self.pattern_provider = pattern_provider
        self.two_step_cfg = two_step_cfg
        device = kwargs.get("device") or "cpu"
        if not init_weights:
            kwargs["device"] = "meta"  # the transformer's layers take it explicitly
        with nullcontext() if init_weights else torch.device("meta"):
            self.emb = nn.ModuleList([nn.Embedding(card + 1, dim) for _ in range(n_q)])
            self.transformer = StreamingTransformer(d_model=dim, num_heads=num_heads,
                                                    dim_feedforward=int(hidden_scale * dim), norm=norm,
                                                    norm_first=norm_first, **kwargs)
            self.out_norm = create_norm_fn(norm, dim) if norm_first else None
            self.linears = nn.ModuleList([nn.Linear(dim, card, bias=bias_proj) for _ in range(n_q)])
        for emb in self.emb:
            emb.lr = emb_lr
        if not init_weights:
            for part in (self.emb, self.transformer, self.out_norm, self.linears):
                if part is not None:
                    part.to_empty(device=device)
        elif weight_init is not None:
            self._init_weights(weight_init, depthwise_init, zero_bias_init)

    def _init_weights(self, method: str, depthwise_init: str | None, zero_bias_init: bool):
        if depthwise_init not in (None, "current", "global"):
            raise ValueError(f"depthwise_init must be None, 'current' or 'global', got {depthwise_init!r}")
        # Embeddings, layers, heads: upstream's order, so that a seeded init draws the same weights.
        for module in self.emb:
            init_layer(module, method, None, zero_bias_init)
        layers = self.transformer.layers
        for i, layer in enumerate(layers):
            depth = {"current": i + 1, "global": len(layers), None: None}[depthwise_init]
            layer.apply(partial(init_layer, method=method, init_depth=depth, zero_bias_init=zero_bias_init))
        for module in self.linears:
            init_layer(module, method, None, zero_bias_init)

    @property
    def special_token_id(self) -> int:
        return self.card

    @property
    def num_codebooks(self) -> int:
        return self.n_q

    def condition_tensors(self, conditions: list[ConditioningAttributes]) -> ConditionTensors:
        """Tokenize and encode a batch of attributes."""
        return self.condition_provider(self.condition_provider.tokenize(conditions))

    def _embed(self, sequence: torch.Tensor) -> torch.Tensor:
        # Python's sum (0 + e0 + e1 + ...): the same additions, in the same order, as upstream.
        return sum(self.emb[k](sequence[:, k]) for k in range(sequence.shape[1]))

    def attention_mask(self, stage: int, steps: int, device: torch.device) -> torch.Tensor | None:
        """Self-attention mask [steps, steps] when predicting codebook `stage` (-1: all); None: the
        transformer's own (causal or full). MAGNeT's LM restricts it (`lm_magnet.py`)."""
        return None

    def _heads(self, out: torch.Tensor) -> torch.Tensor:
        if self.out_norm is not None:
            out = self.out_norm(out)
        forms = self.transformer.matmul_forms
        return torch.stack([forms.linear(out, h.weight, h.bias) for h in self.linears], dim=1)  # [B, K, S, card]

    def forward(self, sequence: torch.Tensor, conditions: list[ConditioningAttributes],
                condition_tensors: ConditionTensors | None = None, stage: int = -1) -> torch.Tensor:
        """Logits [B, K, S, card] of a pattern sequence [B, K, S] (one full pass, no cache)."""
        B, K, S = sequence.shape
        if K != self.num_codebooks:
            raise ValueError(f"sequence has {K} codebooks, the model {self.num_codebooks}")
        if condition_tensors is None:
            conditions = self.att_dropout(self.cfg_dropout(conditions))
            condition_tensors = self.condition_tensors(conditions)
        elif conditions:
            raise ValueError("pass either conditions or condition_tensors, not both")
        x, source = self.fuser(self._embed(sequence), condition_tensors)
        mask = self.attention_mask(stage, x.shape[1], x.device)
        out = self.transformer(x, cross_attention_src=source, src_mask=mask)
        return self._heads(out)[:, :, -S:]  # drop prepended condition positions

    def compute_predictions(self, codes: torch.Tensor, conditions: list[ConditioningAttributes],
                            condition_tensors: ConditionTensors | None = None, stage: int = -1,
                            keep_only_valid_steps: bool = True) -> LMOutput:
        """Logits for codes [B, K, T] laid out by the pattern, mapped back onto the codes."""
        B, K, T = codes.shape
        pattern = self.pattern_provider.get_pattern(T)
        sequence, _, _ = pattern.build_pattern_sequence(codes.contiguous(), self.special_token_id,
                                                        keep_only_valid_steps=keep_only_valid_steps)
        logits = self(sequence, conditions, condition_tensors, stage=stage).permute(0, 3, 1, 2)  # [B, card, K, S]
        # NaN marks logits with no valid context: using one by mistake shows up at once.
        logits, _, mask = pattern.revert_pattern_logits(logits, float("nan"), keep_only_valid_steps)
        return LMOutput(logits.permute(0, 2, 3, 1), mask[None].expand(B, -1, -1))

    def compile_step(self, enable: bool = True) -> bool:
        """Run each one-position generation step through `torch.compile` (inductor), or not.

        The compiled step fuses what lies between the matrix products (norms, residuals, attention
        glue, dtype casts); its self-attention caches have fixed shapes (`KVCache.fixed`), rounded
        up to 256 positions so that one graph serves every step of a generation. The first call
        with a new shape compiles (seconds to minutes; later generations of that shape reuse it).
        Without a C++ compiler, or if compiling fails, generation stays eager and one warning says
        so. Numerics: inductor fuses and reorders float operations, so logits differ from the eager
        path by rounding (tests: greedy tokens equal on a tiny model).

        Returns:
            whether steps will be compiled.
        """
        note = compiler_note() if enable else None
        if enable and any(layer.self_attn.past_context is not None for layer in self.transformer.layers):
            note = "a sliding self-attention window (past_context) is not supported by the fixed-shape step"
        if note is not None:
            warnings.warn(f"compile_step: {note}; generation stays eager", RuntimeWarning, stacklevel=2)
        self.compiled_step = enable and note is None
        return self.compiled_step

    compiled_step: bool = False  # set by compile_step

    def _compiled(self) -> Callable:
        global _compiled_decode
        if _compiled_decode is None:
            compiled = torch.compile(_decode)  # static shapes, but for the text length (mark_dynamic)

            def run(*args):  # the limit raised for this function's calls only (~10 us a step)
                limit = max(_RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit)
                with torch._dynamo.config.patch(recompile_limit=limit):
                    return compiled(*args)

            _compiled_decode = run
        return _compiled_decode

    def _step(self, stream: _Stream, sequence: torch.Tensor, capacity: int) -> torch.Tensor:
        """Feed new steps [b, K, s] of one stream; logits of the last position [b, K, card]."""
        x, source = self.fuser(self._embed(sequence), stream.conditions, first_step=stream.offset == 0)
        if stream.caches is None:
            attn = self.transformer.layers[0].self_attn
            head_dim = self.dim // attn.num_heads
            capacity += x.shape[1] - sequence.shape[2]  # room for prepended conditions
            # kv_heads: with kv_repeat > 1 fewer key/value heads than query heads are cached
            shape = (x.shape[0], attn.kv_heads, capacity, head_dim)
            if self.compiled_step:
                capacity = -(-capacity // _CAPACITY_BUCKET) * _CAPACITY_BUCKET
                stream.position = torch.zeros(1, dtype=torch.long, device=x.device)
                stream.visible = torch.zeros(1, capacity, dtype=torch.bool, device=x.device)
                stream.caches = [KVCache.fixed(*shape[:2], capacity, head_dim, x, stream.position, stream.visible)
                                 for _ in self.transformer.layers]
            else:
                stream.caches = [KVCache.empty(*shape, x) for _ in self.transformer.layers]
            stream.positions = self.transformer.positional(0, capacity, 1, x)  # [1, capacity, C], once
            if source is not None:
                stream.cross_kv = self.transformer.project_cross_kv(source)
                if self.compiled_step:  # the text length varies with the prompt: one graph for any
                    for tensor in (t for kv in stream.cross_kv for t in kv):
                        torch._dynamo.mark_dynamic(tensor, 2)
        steps, start = x.shape[1], stream.offset
        pos = stream.positions[:, start:start + steps].expand(x.shape[0], -1, -1)
        stream.offset += steps
        if stream.position is None:
            return _decode(self, x, pos, stream.cross_kv, stream.caches)
        # Fixed-shape caches: several steps at once (a prompt, prepended conditions) go eager into
        # the buffers' prefix; a single step is written at `position` by the compiled graph.
        stream.visible[:, start:start + steps] = True
        if steps > 1:
            for cache in stream.caches:
                cache.position = None
            try:
                return _decode(self, x, pos, stream.cross_kv, stream.caches)
            finally:
                for cache in stream.caches:
                    cache.position = stream.position
        stream.position.fill_(start)
        window = min(stream.visible.shape[1], -(-(start + 1) // _WINDOW_BLOCK) * _WINDOW_BLOCK)
        if stream.window is None or stream.window.shape[1] != window:  # a new block: one graph for any window
            stream.window = stream.visible[:, :window]
            torch._dynamo.mark_dynamic(stream.window, 1)
        for cache in stream.caches:
            cache.length, cache.visible = start + 1, stream.window
        # A stream's first single step runs eager: it fills the weights' lazy caches (int4 kernel layouts),
        # which a traced step would otherwise see change (a recompile at the next step).
        stream.single_steps += 1
        if self.compiled_step and stream.single_steps > 1:
            try:
                return self._compiled()(self, x, pos, stream.cross_kv, stream.caches)
            except Exception as error:  # e.g. the compiler fails: the same step, eager
                self.compiled_step = False
                warnings.warn(f"compile_step: compiling failed ({type(error).__name__}: {str(error)[:200]}); "
                              "generation continues eager", RuntimeWarning, stacklevel=2)
        return _decode(self, x, pos, stream.cross_kv, stream.caches)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor | None = None, conditions: list[ConditioningAttributes] | None = None,
                 num_samples: int | None = None, max_gen_len: int = 256, use_sampling: bool = True,
                 temp: float = 1.0, top_k: int = 250, top_p: float = 0.0, cfg_coef: float | None = None,
                 two_step_cfg: bool | None = None, remove_prompts: bool = False, check: bool = False,
                 callback: Callable[[int, int], None] | None = None,
                 null_conditions: list[ConditioningAttributes] | None = None,
                 on_step: Callable[[torch.Tensor, int], None] | None = None, **kwargs) -> torch.Tensor:
        """Generate codes [B, K, max_gen_len] (the prompt included unless `remove_prompts`).

        Args:
            prompt: codes [B, K, T] to continue.
            conditions: one `ConditioningAttributes` per sample; CFG adds their null versions.
            num_samples: batch size when neither prompt nor conditions are given.
            max_gen_len: number of timesteps to produce.
            use_sampling, temp, top_k, top_p: sampling (greedy when off or temp <= 0).
            cfg_coef: guidance coefficient (default: the model's).
            two_step_cfg: separate conditional / unconditional passes (default: the model's).
            remove_prompts: return only the new timesteps.
            check: verify the pattern invariants at every step.
            callback: called as callback(steps_done, steps_total).
            null_conditions: CFG's unconditional side, one per sample (default: `conditions` with every
                attribute nulled); a negative prompt is a null whose text is not empty.
            on_step: called as on_step(sequence, step) after each step, with the pattern sequence
                [B, K, S] filled up to `step` (read only; streaming decodes what is complete).
        """
        steps = self.generate_steps(prompt, conditions, num_samples, max_gen_len, use_sampling, temp, top_k, top_p,
                                    cfg_coef, two_step_cfg, remove_prompts, check, callback, null_conditions)
        while True:
            try:
                sequence, step = next(steps)
            except StopIteration as done:
                return done.value
            if on_step is not None:
                on_step(sequence, step)

    @torch.no_grad()
    def generate_steps(self, prompt: torch.Tensor | None = None, conditions: list[ConditioningAttributes] | None = None,
                       num_samples: int | None = None, max_gen_len: int = 256, use_sampling: bool = True,
                       temp: float = 1.0, top_k: int = 250, top_p: float = 0.0, cfg_coef: float | None = None,
                       two_step_cfg: bool | None = None, remove_prompts: bool = False, check: bool = False,
                       callback: Callable[[int, int], None] | None = None,
                       null_conditions: list[ConditioningAttributes] | None = None):
        """`generate`, one step at a time: yields (sequence, step) after each step (the pattern sequence
        [B, K, S] filled up to `step`, read only) and returns `generate`'s codes (StopIteration.value).

        Streaming drives it from the caller's thread: torch's CPU kernels run up to 2x slower in a
        second thread once the main one has used its OpenMP team (measured in bench/README.md).
        """
        if self.training:
            raise RuntimeError("generate() needs eval mode: call model.eval() first")
        conditions = list(conditions or [])
        device = next(self.parameters()).device
        cfg_coef = self.cfg_coef if cfg_coef is None else cfg_coef
        two_step_cfg = self.two_step_cfg if two_step_cfg is None else two_step_cfg
        if num_samples is None:
            num_samples = prompt.shape[0] if prompt is not None else len(conditions) or 1
        if conditions and len(conditions) != num_samples or prompt is not None and prompt.shape[0] != num_samples:
            raise ValueError(f"inconsistent batch: {len(conditions)} conditions, prompt of shape "
                             f"{None if prompt is None else tuple(prompt.shape)}, num_samples={num_samples}")

        if not conditions:
            streams = [_Stream({})]
        else:
            nulls = (ClassifierFreeGuidanceDropout(p=1.0)(conditions) if null_conditions is None
                     else list(null_conditions))
            if len(nulls) != len(conditions):
                raise ValueError(f"{len(nulls)} null conditions for {len(conditions)} conditions: give one per sample")
            if two_step_cfg:
                streams = [_Stream(self.condition_tensors(conditions)), _Stream(self.condition_tensors(nulls))]
            else:
                streams = [_Stream(self.condition_tensors(conditions + nulls))]

        if prompt is None:
            prompt = torch.zeros((num_samples, self.num_codebooks, 0), dtype=torch.long, device=device)
        B, K, T = prompt.shape
        if T >= max_gen_len:
            raise ValueError(f"prompt of {T} steps leaves nothing to generate with max_gen_len={max_gen_len}")
        rows = B * (2 if conditions and not two_step_cfg else 1)  # rows of every product in a step
        self.transformer.matmul_forms.choose([layer.linear1.weight for layer in self.transformer.layers], rows)
        pattern = self.pattern_provider.get_pattern(max_gen_len)
        unknown = -1  # placeholder for codes not generated yet
        codes = torch.full((B, K, max_gen_len), unknown, dtype=torch.long, device=device)
        codes[..., :T] = prompt
        sequence, _, mask = pattern.build_pattern_sequence(codes, self.special_token_id)
        start = pattern.get_first_step_with_timesteps(T)
        steps = sequence.shape[-1]
        prev = 0
        for offset in range(start, steps):
            current = sequence[..., prev:offset]
            if check:
                valid = mask[None, :, prev:offset].expand(B, -1, -1)
                if not (current == torch.where(valid, current, self.special_token_id)).all():
                    raise AssertionError("sequence does not match the pattern's mask")
                if (current == unknown).any():
                    raise AssertionError("feeding a code that was not generated")
            if len(streams) == 1 and conditions:
                logits = self._step(streams[0], torch.cat([current, current]), steps)
                logits = apply_cfg(*logits.split(B), cfg_coef)
            elif len(streams) == 2:
                logits = apply_cfg(self._step(streams[0], current, steps), self._step(streams[1], current, steps),
                                   cfg_coef)
            else:
                logits = self._step(streams[0], current, steps)
            token = sample_next_token(logits, use_sampling, temp, top_k, top_p, step=offset)  # [B, K, 1]
            token[~mask[:, offset:offset + 1].expand(B, -1, -1)] = self.special_token_id
            column = sequence[..., offset:offset + 1]
            sequence[..., offset:offset + 1] = torch.where(column == unknown, token, column)  # keep prompt codes
            prev = offset
            yield sequence, offset
            if callback is not None:
                callback(1 + offset - start, steps - start)

        out, _, _ = pattern.revert_pattern_sequence(sequence, special_token=unknown)
        out = out[..., T if remove_prompts else 0:max_gen_len]
        if (out < 0).any() or (out > self.card).any():
            raise AssertionError("generation left unfilled or out-of-range codes")
        return out
