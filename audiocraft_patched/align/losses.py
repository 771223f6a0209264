"""Losses for alignment (student conditioning vs the teacher's) and fine-tuning (the LM's own CE).

No upstream counterpart except `lm_cross_entropy`, which computes what upstream's
`MusicGenSolver._compute_cross_entropy` (audiocraft/solvers/musicgen.py, 1.3.0) computes: the
cross-entropy of each codebook over its valid (delay-pattern) positions, averaged over codebooks.

Alignment losses, from the cheapest to the most faithful to what the frozen LM does:
- `feature`: the student's mean condition vs the teacher's (lengths differ, means do not);
- `xattn`: each layer's cross-attention output (what the LM actually reads from the condition);
- `kl`: KL(teacher || student) of the next-token distributions on code sequences.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("kl", "xattn", "feature")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over tokens: x [B, L, D], mask [B, L] -> [B, D] (zero for an all-masked row)."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


def next_token_kl(teacher_logprobs: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per valid position, averaged.

    Args:
        teacher_logprobs: [B, K, T, card] teacher log-probabilities (any value where invalid).
        student_logits: [B, K, T, card] student logits.
        mask: [K, T] or [B, K, T] True where both are valid.
    """
    mask = mask.expand(student_logits.shape[:-1]) if mask.dim() == 2 else mask
    t = teacher_logprobs[mask].float()  # [N, card]
    s = student_logits[mask].float().log_softmax(-1)
    return (t.exp() * (t - s)).sum(-1).mean()


def top1_agreement(teacher_logprobs: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fraction of valid positions where the teacher's and the student's most likely token agree."""
    mask = mask.expand(student_logits.shape[:-1]) if mask.dim() == 2 else mask
    return (teacher_logprobs[mask].argmax(-1) == student_logits[mask].argmax(-1)).float().mean()


def xattn_loss(student: list[torch.Tensor], teacher: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """MSE of the cross-attention outputs, per layer relative to the teacher's mean square.

    Args:
        student: per layer [B, S, D] (from `features.cross_attention_tap`).
        teacher: [B, layers, S, D].
        scale: [layers] the teacher's mean square per layer over the whole data set: a fixed
            normaliser keeps the loss a plain per-sample mean, so that averaging over processes
            (or batches) gives the same gradient as one large batch.
    """
    if len(student) != teacher.shape[1]:
        raise ValueError(f"{len(student)} student layers vs {teacher.shape[1]} teacher layers")
    losses = [F.mse_loss(out, teacher[:, layer].to(out)) / scale[layer].clamp(min=1e-8)
              for layer, out in enumerate(student)]
    return torch.stack(losses).mean()


def feature_loss(student: torch.Tensor, student_mask: torch.Tensor, teacher_mean: torch.Tensor,
                 scale: torch.Tensor) -> torch.Tensor:
    """MSE between the student's mean condition and the teacher's, relative to the teacher's mean square.

    Args:
        student: [B, L, D] student condition; student_mask: [B, L].
        teacher_mean: [B, D] teacher condition averaged over its tokens.
        scale: the mean square of `teacher_mean` over the whole data set (fixed, see `xattn_loss`).
    """
    return F.mse_loss(masked_mean(student, student_mask), teacher_mean.to(student)) / scale.clamp(min=1e-8)


def lm_cross_entropy(logits: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The LM's training loss: per-codebook cross-entropy over valid positions, averaged over codebooks.

    Args:
        logits: [B, K, T, card] from `LMModel.compute_predictions` (aligned with the codes).
        codes: [B, K, T] targets.
        mask: [B, K, T] True where the logits are valid.
    """
    per_codebook = []
    for k in range(codes.shape[1]):
        valid = mask[:, k]
        per_codebook.append(F.cross_entropy(logits[:, k][valid].float(), codes[:, k][valid]))
    return torch.stack(per_codebook).mean()


def parse_weights(spec: str | dict[str, float]) -> dict[str, float]:
    """'kl=1,feature=0.1' (or a dict) -> {'kl': 1.0, 'feature': 0.1}; a bare name weighs 1."""
    if isinstance(spec, dict):
        weights = {str(k): float(v) for k, v in spec.items()}
    else:
        weights = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, value = part.partition("=")
            try:
                weights[name.strip()] = float(value) if value else 1.0
            except ValueError as exc:
                raise ValueError(f"loss weight {part!r} is not NAME=NUMBER") from exc
    unknown = sorted(set(weights) - set(LOSSES))
    if unknown or not weights or not any(w > 0 for w in weights.values()):
        raise ValueError(f"losses must name some of {LOSSES} with a positive weight (e.g. 'kl' or 'kl=1,feature=0.1'), "
                         f"got {spec!r}")
    return {k: w for k, w in weights.items() if w > 0}
