"""`MagnetLMModel`: MAGNeT's non-autoregressive LM, decoding masked spans codebook by codebook.

Mirrors `audiocraft/models/lm_magnet.py` (audiocraft 1.3.0): same constructor arguments, the
restricted self-attention context of codebooks > 0 (`subcodes_context`), and `generate` with
MAGNeT's iterative decoding: per codebook (stage), `decoding_steps[stage]` rounds that re-mask
the least confident spans (cosine schedule), re-predict them with annealed CFG and temperature,
and keep the rest. Same weights, inputs and seed give upstream's tokens at every stage.

Attention is what the released models run on upstream (xformers, non-causal, and for stages > 0
a mask keeping |query - key| <= subcodes_context). Upstream's torch fallback (no xformers) turns
that mask into a causal flag and computes something the models were not trained with; we do not
reproduce it. The mask is made for the length at hand, so `compression_model_framerate` and
`segment_duration` (upstream precomputes masks of that size) are accepted and only recorded.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ..modules.conditioners import ClassifierFreeGuidanceDropout, ConditioningAttributes
from .lm import ConditionTensors, LMModel, multinomial, sample_top_p

SPAN_ARRANGEMENTS = ("nonoverlap", "stride1")
SPAN_SCORINGS = ("max", "prod")
_KEEP = -1e4  # score of a span that must not be masked again (prompt, or already decided)


def magnet_lm_kwargs(cfg: dict) -> dict[str, Any]:
    """The MagnetLMModel arguments that upstream's `load_lm_model_magnet` fills from the config.

    The config's `transformer_lm.span_len` is a placeholder (-1); the span length is `masking.span_len`,
    and the segment `dataset.segment_duration`.
    """
    masking = cfg.get("masking") or {}
    out: dict[str, Any] = {}
    if "span_len" in masking:
        out["span_len"] = masking["span_len"]
    if "segment_duration" in (cfg.get("dataset") or {}):
        out["segment_duration"] = cfg["dataset"]["segment_duration"]
    return out


def _top_k_filter(probs: torch.Tensor, k: int) -> torch.Tensor:
    """probs renormalised over the k most probable tokens (ties with the k-th kept, as upstream)."""
    kth = torch.topk(probs, k, dim=-1).values[..., [-1]]
    kept = probs * (probs >= kth).float()
    return kept / kept.sum(dim=-1, keepdim=True)


class MagnetLMModel(LMModel):
    """MAGNeT's LM: an `LMModel` (non-causal) with restricted attention and masked decoding.

    Args:
        subcodes_context: codebooks > 0 attend to keys at most this many steps away (-1: all).
        compression_model_framerate, segment_duration: upstream sizes its precomputed masks with
            them; recorded only (masks are made for the actual length).
        span_len: length of the masked spans, in training and decoding (1: single tokens).
        **kwargs: `LMModel` arguments.
    """

    def __init__(self, subcodes_context: int = 5, compression_model_framerate: int = 50,
                 segment_duration: float = 10, span_len: int = 3, **kwargs):
        if kwargs.get("causal", False):
            raise ValueError("MAGNeT's LM attends both ways (causal: false in every MAGNeT config); "
                             "causal=True is not supported")
        if isinstance(span_len, bool) or not isinstance(span_len, int) or span_len < 1:
            raise ValueError(f"span_len must be a positive integer (masking.span_len), got {span_len!r}")
        super().__init__(**kwargs)
        self.causal = False
        self.subcodes_context = subcodes_context
        self.compression_model_framerate = compression_model_framerate
        self.segment_duration = segment_duration
        self.span_len = span_len

    def restricted_context_attn_mask(self, seq_len: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """[seq_len, seq_len] boolean: query i may see key j when |i - j| <= subcodes_context."""
        positions = torch.arange(seq_len, device=device)
        return (positions.view(-1, 1) - positions.view(1, -1)).abs() <= self.subcodes_context

    def attention_mask(self, stage: int, steps: int, device: torch.device) -> torch.Tensor | None:
        """Stage 0 (and subcodes_context -1) attend everywhere; later stages to a local window."""
        if stage > 0 and self.subcodes_context > -1:
            return self.restricted_context_attn_mask(steps, device)
        return None

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor | None = None, conditions: list[ConditioningAttributes] | None = None,
                 num_samples: int | None = None, max_gen_len: int = 256, use_sampling: bool = True,
                 temp: float = 1.0, top_k: int = 250, top_p: float = 0.0, cfg_coef: float | None = None,
                 two_step_cfg: bool | None = None, remove_prompts: bool = False, check: bool = False,
                 callback: Callable[[int, int], None] | None = None, max_cfg_coef: float = 10.0,
                 min_cfg_coef: float = 1.0, decoding_steps: list[int] | tuple[int, ...] = (20, 10, 10, 10),
                 anneal_temp: bool = True, span_scoring: str = "max", span_arrangement: str = "nonoverlap",
                 null_conditions: list[ConditioningAttributes] | None = None, **kwargs) -> torch.Tensor:
        """Codes [B, K, T] by MAGNeT's iterative decoding (T: max_gen_len, cut to whole spans).

        Args:
            prompt: codes [B, K, T0] kept as they are at the start.
            conditions: one `ConditioningAttributes` per sample; CFG adds their null versions.
            num_samples: batch size when neither prompt nor conditions are given.
            max_gen_len: timesteps to produce (with non-overlapping spans, the last T % span_len are dropped).
            use_sampling, temp, top_k, top_p: sampling; `temp` is the start of a linear decay to 0
                over each stage's steps when `anneal_temp`. The defaults are `LMModel.generate`'s, as
                upstream; MAGNeT's own (top_p 0.9, temp 3) come from `MAGNeT.set_generation_params`.
            max_cfg_coef, min_cfg_coef: CFG coefficient, moved from max to min as the masking rate falls.
            decoding_steps: rounds per codebook, one entry per codebook.
            span_scoring: confidence of a span: its most ('max') or all ('prod') tokens' probabilities.
            span_arrangement: spans on a grid ('nonoverlap') or starting anywhere ('stride1').
            callback: called as callback(steps_done, steps_total).
            null_conditions: CFG's unconditional side, one per sample (default: `conditions` with every
                attribute nulled; a negative prompt is a null whose text is not empty), as `LMModel.generate`.
            cfg_coef, two_step_cfg, remove_prompts, check: MusicGen's; not used by MAGNeT (errors if set).
        """
        unsupported = {"cfg_coef": cfg_coef is not None, "two_step_cfg": bool(two_step_cfg),
                       "remove_prompts": remove_prompts, "check": check, **{k: True for k in kwargs}}
        if any(unsupported.values()):
            raise ValueError(f"MAGNeT does not take {[k for k, v in unsupported.items() if v]}; its guidance is "
                             "max_cfg_coef -> min_cfg_coef (see MAGNeT.set_generation_params). A MAGNeT checkpoint "
                             "loads with MAGNeT.get_pretrained or load_generator, not MusicGen.get_pretrained")
        if self.training:
            raise RuntimeError("generate() needs eval mode: call model.eval() first")
        self._check_decoding(decoding_steps, span_scoring, span_arrangement)
        conditions = list(conditions or [])
        device = next(self.parameters()).device
        if num_samples is None:
            num_samples = prompt.shape[0] if prompt is not None else len(conditions) or 1
        if conditions and len(conditions) != num_samples or prompt is not None and prompt.shape[0] != num_samples:
            raise ValueError(f"inconsistent batch: {len(conditions)} conditions, prompt of shape "
                             f"{None if prompt is None else tuple(prompt.shape)}, num_samples={num_samples}")
        # One forward of 2B rows: conditions, then their nulls (CFG).
        nulls = ClassifierFreeGuidanceDropout(p=1.0)(conditions) if null_conditions is None else list(null_conditions)
        if len(nulls) != len(conditions):
            raise ValueError(f"{len(nulls)} null conditions for {len(conditions)} conditions: give one per sample")
        cond = self.condition_tensors(conditions + nulls) if conditions else {}
        if prompt is None:
            prompt = torch.zeros((num_samples, self.num_codebooks, 0), dtype=torch.long, device=device)
        B, K, prompt_len = prompt.shape
        if prompt_len >= max_gen_len:
            raise ValueError(f"prompt of {prompt_len} steps leaves nothing to generate with max_gen_len={max_gen_len}")
        codes = torch.full((B, K, max_gen_len), self.special_token_id, dtype=torch.long, device=device)
        codes[..., :prompt_len] = prompt
        progress = _Progress(callback, sum(decoding_steps))
        for stage, steps in zip(range(K), decoding_steps):
            codes = self._generate_stage(codes, cond, stage, prompt, steps, use_sampling, temp, top_k, top_p,
                                         max_cfg_coef, min_cfg_coef, anneal_temp, span_scoring, span_arrangement,
                                         progress)
        return codes

    def _check_decoding(self, decoding_steps, span_scoring: str, span_arrangement: str) -> None:
        if span_arrangement not in SPAN_ARRANGEMENTS:
            raise ValueError(f"span_arrangement must be one of {SPAN_ARRANGEMENTS}, got {span_arrangement!r}")
        if span_scoring not in SPAN_SCORINGS:
            raise ValueError(f"span_scoring must be one of {SPAN_SCORINGS}, got {span_scoring!r}")
        steps = list(decoding_steps)
        if len(steps) < self.num_codebooks or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                                                  for s in steps):
            raise ValueError(f"decoding_steps must give a positive number of steps for each of the "
                             f"{self.num_codebooks} codebooks, got {steps}")

    def _generate_stage(self, codes: torch.Tensor, cond: ConditionTensors, stage: int, prompt: torch.Tensor,
                        steps: int, use_sampling: bool, temp: float, top_k: int, top_p: float, max_cfg_coef: float,
                        min_cfg_coef: float, anneal_temp: bool, span_scoring: str, span_arrangement: str,
                        progress: "_Progress") -> torch.Tensor:
        """Decode codebook `stage` of codes [B, K, T] in `steps` rounds; returns the codes (maybe cut)."""
        B, K, T = codes.shape
        device = codes.device
        prompt_len = prompt.shape[-1]
        mask_id = self.special_token_id
        spans = self.span_len > 1 and span_arrangement == "nonoverlap"  # masks whole spans on a grid
        overlapping = self.span_len > 1 and span_arrangement == "stride1"
        if spans:
            n_spans = T // self.span_len
            T = n_spans * self.span_len  # as upstream: the tail that makes no whole span is dropped
            codes = codes[..., :T]
            scores = torch.zeros((B, 1, n_spans), dtype=torch.float32, device=device)
            scores[..., :prompt_len // self.span_len] = _KEEP
            to_generate = n_spans - prompt_len // self.span_len
        else:
            scores = torch.zeros((B, 1, T), dtype=torch.float32, device=device)
            scores[..., :prompt_len] = _KEEP
            to_generate = T - prompt_len
        current = torch.full((B, 1, T), mask_id, dtype=torch.long, device=device)  # this codebook: [B, 1, T]
        # float32 tensors as upstream: the masking rate decides counts by truncation, so its rounding matters.
        for timestep, steps_left in zip(torch.linspace(0, 1, steps, device=device), reversed(range(steps))):
            mask_p = torch.cos(timestep * math.pi * 0.5)
            n_masked = max(int((mask_p * to_generate).item()), 1)
            if overlapping:
                mask = torch.cat([self._least_probable_span_masking(scores[[i]], n_masked) for i in range(B)])
                current[mask] = mask_id
            elif spans:
                picked = scores.topk(n_masked, dim=-1).indices
                span_mask = torch.zeros((B, 1, n_spans), dtype=torch.bool, device=device).scatter(2, picked, True)
                current[torch.repeat_interleave(span_mask, self.span_len, dim=-1)] = mask_id
            else:
                current = current.scatter(2, scores.topk(n_masked, dim=-1).indices, mask_id)
            if prompt_len:
                current[..., :prompt_len] = prompt[:, stage:stage + 1, :]
            codes[:, [stage]] = current
            if cond:
                cond_logits, uncond_logits = self(torch.cat([codes, codes]), [], cond, stage=stage).split(B)
                coef = float(mask_p) * max_cfg_coef + (1 - float(mask_p)) * min_cfg_coef  # annealed guidance
                logits = uncond_logits + (cond_logits - uncond_logits) * coef
            else:
                logits = self(codes, [], {}, stage=stage)
            t = temp * (steps_left / steps) if anneal_temp else temp
            logits = logits[:, stage:stage + 1].float()  # [B, 1, T, card]
            probs = torch.softmax(logits / max(t, 1e-2), dim=-1)
            if not use_sampling:
                tokens = torch.argmax(logits, dim=-1, keepdim=True)
            elif top_p > 0:
                tokens = sample_top_p(probs, top_p)
            elif top_k > 0:
                probs = _top_k_filter(probs, top_k)  # upstream rescales probs in place: scores use these
                tokens = multinomial(probs)
            else:
                tokens = multinomial(probs)
            masked = current == mask_id
            current = torch.where(masked, tokens[..., 0], current)
            codes[:, [stage]] = current
            token_probs = torch.gather(probs, 3, tokens)[..., 0]  # [B, 1, T]
            if spans:
                per_span = token_probs.reshape(B, 1, n_spans, -1)
                if span_scoring == "max":
                    scores = 1 - per_span.max(dim=-1)[0]
                else:  # 'prod', in log space
                    scores = (-torch.log(token_probs)).reshape(B, 1, n_spans, -1).sum(dim=-1)
                scores = scores.masked_fill(~span_mask, _KEEP)
            else:
                scores = (-torch.log(token_probs)).masked_fill(~masked, _KEEP)
            progress.step()
        return codes

    def _spans_mask(self, starts: torch.Tensor, T: int, device: torch.device) -> torch.Tensor:
        """[1, 1, T] boolean: True over the span_len steps from each of `starts`."""
        mask = torch.zeros((1, 1, T), dtype=torch.bool, device=device)
        mask[..., starts] = True
        shifted = mask.clone()
        for _ in range(self.span_len - 1):
            shifted = torch.cat([torch.zeros((1, 1, 1), dtype=torch.bool, device=device), shifted[..., :-1]], dim=-1)
            mask |= shifted
        return mask

    def _least_probable_span_masking(self, scores: torch.Tensor, n_masked: int) -> torch.Tensor:
        """[1, 1, T] mask of the u least probable overlapping spans, u found by bisection so that about
        `n_masked` tokens are masked (as upstream: the same bisection, the same stopping rule)."""
        T = scores.shape[-1]
        span_scores = scores.unfold(2, self.span_len, 1).sum(dim=-1)  # log-prob of each span
        order = torch.argsort(span_scores[0, 0], descending=True)
        n_masked = max(n_masked, self.span_len)
        low, high = n_masked // self.span_len, n_masked - self.span_len + 1
        mid = round(0.5 * (low + high))
        mask = self._spans_mask(order[:mid], T, scores.device)
        while low < mid < high:
            mask = self._spans_mask(order[:mid], T, scores.device)
            if mask.sum() > n_masked:
                high = mid
            else:
                low = mid
            mid = round(0.5 * (low + high))
        return mask


class _Progress:
    """Counts decoding rounds across stages for the progress callback."""

    def __init__(self, callback: Callable[[int, int], None] | None, total: int):
        self.callback, self.total, self.done = callback, total, 0

    def step(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)
