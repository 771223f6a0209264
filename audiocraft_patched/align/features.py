"""Exact, padding-free encoder states, conditions and LM outputs for many texts at once.

No upstream counterpart. MusicGen's cross-attention has no key mask (upstream attends to the
zero-padded positions, and the released weights were trained that way), so a text's
conditioning effect depends on how long the other texts of its batch are. To measure or match
what the LM does with one text, these helpers group texts of equal token length and run each
group unpadded: the result for every text equals running it alone.
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch

from ..modules.conditioners import BaseConditioner


def groups_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped by equal length, in chunks of at most `batch_size` (deterministic order)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, length in enumerate(lengths):
        groups[int(length)].append(i)
    return [idx[start:start + batch_size] for _, idx in sorted(groups.items())
            for start in range(0, len(idx), batch_size)]


def token_lengths(cond: BaseConditioner, texts: Sequence[str]) -> list[int]:
    """Number of tokens of each text under the conditioner's tokenizer."""
    lengths = []
    for start in range(0, len(texts), 512):
        lengths += cond.tokenize(list(texts[start:start + 512]))["attention_mask"].sum(1).tolist()
    return lengths


@torch.no_grad()
def per_text(cond: BaseConditioner, texts: Sequence[str], fn: Callable[[dict], torch.Tensor],
             batch_size: int = 64) -> list[torch.Tensor]:
    """`fn(tokenized batch) -> [b, L, ...]` for every text, run on unpadded equal-length groups.

    Returns one [L_i, ...] tensor per text (on the CPU).
    """
    if any(not t for t in texts):
        raise ValueError("empty text in the data: every caption must hold at least one character")
    out: list[torch.Tensor | None] = [None] * len(texts)
    for idx in groups_by_length(token_lengths(cond, texts), batch_size):
        result = fn(cond.tokenize([texts[i] for i in idx])).float().cpu()
        for row, i in enumerate(idx):
            out[i] = result[row]
    return out  # type: ignore[return-value]


def encoder_states(cond: BaseConditioner, texts: Sequence[str], batch_size: int = 64) -> list[torch.Tensor]:
    """What `cond.encode` gives for every text, before the projection: [L_i, D_enc] encoder states."""
    return per_text(cond, texts, lambda inputs: cond.encode(inputs)[0], batch_size)


def conditions(cond: BaseConditioner, texts: Sequence[str], batch_size: int = 64) -> list[torch.Tensor]:
    """Conditioner outputs [L_i, D_lm] (what the LM reads) for every text."""
    return per_text(cond, texts, lambda inputs: cond(inputs)[0], batch_size)


def pad(seqs: Sequence[torch.Tensor], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad [L_i, D] tensors with zeros: ([B, L, D], mask [B, L] int)."""
    length = max(s.shape[0] for s in seqs) if length is None else length
    x = seqs[0].new_zeros(len(seqs), length, seqs[0].shape[-1])
    mask = torch.zeros(len(seqs), length, dtype=torch.long, device=x.device)
    for i, s in enumerate(seqs):
        x[i, :s.shape[0]] = s
        mask[i, :s.shape[0]] = 1
    return x, mask


@contextmanager
def cross_attention_tap(lm) -> Iterator[list[torch.Tensor]]:
    """Collect each layer's cross-attention output [B, S, D] during the LM passes run inside."""
    outputs: list[torch.Tensor] = []
    handles = [layer.cross_attention.register_forward_hook(lambda _m, _i, out: outputs.append(out))
               for layer in lm.transformer.layers if layer.cross_attention is not None]
    if not handles:
        raise ValueError("this LM has no cross-attention: use the 'kl' or 'feature' loss instead of 'xattn'")
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def lm_outputs(lm, attribute: str, conds: Sequence[torch.Tensor], codes: torch.Tensor, xattn: bool = False,
               batch_size: int = 64) -> dict[str, torch.Tensor]:
    """The LM's teacher-forced outputs on `codes` [N, K, T] under each text's own condition [L_i, D].

    Returns `logprobs` [N, K, T, card] (log-softmax; NaN where `mask` is False), `mask` [K, T]
    (positions with valid logits) and, with `xattn`, `xattn` [N, layers, S, D] (cross-attention
    outputs on the pattern sequence).
    """
    device = next(lm.parameters()).device
    logprobs, taps, mask = [None] * len(conds), [None] * len(conds), None
    with torch.no_grad():
        for idx in groups_by_length([c.shape[0] for c in conds], batch_size):
            cond = torch.stack([conds[i] for i in idx]).to(device)
            cond_mask = torch.ones(cond.shape[:2], dtype=torch.long, device=device)
            with (cross_attention_tap(lm) if xattn else no_tap()) as tapped:
                out = lm.compute_predictions(codes[idx].to(device), [],
                                             condition_tensors={attribute: (cond, cond_mask)})
            mask = out.mask[0].cpu()
            lp = out.logits.float().log_softmax(-1).cpu()
            for row, i in enumerate(idx):
                logprobs[i] = lp[row]
                if xattn:
                    taps[i] = torch.stack([t[row].float().cpu() for t in tapped])
    result = {"logprobs": torch.stack(logprobs), "mask": mask}
    if xattn:
        result["xattn"] = torch.stack(taps)
    return result


@contextmanager
def no_tap() -> Iterator[list[torch.Tensor]]:
    """Stands in for `cross_attention_tap` when no cross-attention output is needed."""
    yield []
