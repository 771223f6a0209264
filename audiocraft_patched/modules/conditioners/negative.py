"""Negative prompts: classifier-free guidance whose unconditional side is a text instead of nothing.

No upstream counterpart: upstream's CFG null condition is every attribute emptied. AudioLDM2 and
stable-audio-tools take a negative prompt; here it is the same idea on MusicGen's guidance,
`logits = null + cfg_coef * (cond - null)`: when the null row describes something ("trumpet"),
sampling is pushed away from it. Everything else in the null row (melody, image, reference clip)
stays null, so a sample without a negative prompt is guided exactly as before.
"""
from __future__ import annotations

from typing import Sequence

from .base import ClassifierFreeGuidanceDropout, ConditioningAttributes, ConditioningProvider


def negative_conditions(provider: ConditioningProvider, attributes: list[ConditioningAttributes],
                        negatives: Sequence[str | None]) -> list[ConditioningAttributes]:
    """CFG's null conditions of `attributes`, the text of sample i being `negatives[i]` (None: empty, as upstream).

    Args:
        provider: the LM's condition provider (its one text conditioner receives the negative text).
        attributes: the samples, one per row.
        negatives: one negative text per sample, already checked as texts (str or None).
    """
    negatives = list(negatives)
    if len(negatives) != len(attributes):
        raise ValueError(f"{len(negatives)} negative prompts for {len(attributes)} samples: give one per sample "
                         "(None for none)")
    texts = provider.text_conditions
    if len(texts) != 1:
        have = {name: type(c).__name__ for name, c in provider.conditioners.items()}
        raise ValueError(f"negative prompts need a model with one text conditioner; this one has {len(texts)} "
                         f"(conditioners: {have})")
    nulls = ClassifierFreeGuidanceDropout(p=1.0)(attributes)  # a deep copy, every attribute nulled
    for null, text in zip(nulls, negatives):
        if text is not None:
            null.text[texts[0]] = text
    return nulls
