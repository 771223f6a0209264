"""Captions of world clips: templates x synonyms, a training set and a held-out set of paraphrases.

Our own code (no upstream counterpart). Both sets name the attributes with the same words; they
differ in sentence structure: no held-out template is ever seen in training, so adherence on
them measures whether the model follows the words, not memorised sentences.
"""
from __future__ import annotations

import re

import numpy as np

from .synth import ATTRIBUTES, Attributes

# Words for each attribute value; any of them may fill the slot.
SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "instrument": {"flute": ("flute",), "clarinet": ("clarinet",), "trumpet": ("trumpet",)},
    "register": {"low": ("low", "deep"), "mid": ("mid-range", "middle"), "high": ("high", "high-pitched")},
    "tempo": {"slow": ("slow", "unhurried"), "fast": ("fast", "quick")},
    "density": {"sparse": ("sparse hi-hats", "occasional hi-hat ticks"),
                "dense": ("busy hi-hats", "rapid hi-hat ticks")},
    "loudness": {"quiet": ("quiet", "soft"), "loud": ("loud", "powerful")},
}

TRAIN_TEMPLATES = (
    "a {loudness} {tempo} {instrument} melody in a {register} register with {density}",
    "{tempo} {register} {instrument}, {loudness}, over {density}",
    "{density} and a {loudness} {instrument} playing a {tempo} {register} tune",
    "{loudness} music: {instrument}, {register} notes, {tempo} tempo, {density}",
    "a {register} {instrument} line, {tempo} and {loudness}, {density}",
    "{instrument} solo, {register}, {tempo}, {loudness}, with {density}",
)
HELDOUT_TEMPLATES = (
    "imagine {density} beneath a {register} {instrument} that is {loudness} and {tempo}",
    "the {instrument} plays {tempo}, {register} and {loudness}; {density} keep time",
    "{tempo} piece for {instrument} in the {register} range, {loudness}, {density} behind it",
)
SPLITS = {"train": TRAIN_TEMPLATES, "heldout": HELDOUT_TEMPLATES}


def caption(attrs: Attributes, rng: np.random.Generator, split: str = "train") -> str:
    """A random caption of `attrs` from the `split` templates ('train' or 'heldout')."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    templates = SPLITS[split]
    words = {name: SYNONYMS[name][value][rng.integers(len(SYNONYMS[name][value]))]
             for name, value in attrs.as_dict().items()}
    return templates[rng.integers(len(templates))].format(**words)


def all_captions(split: str = "train") -> list[str]:
    """Every caption of `split`: every template with every attribute set and synonym choice."""
    out = []
    for template in SPLITS[split]:
        fills = [{}]
        for name, values in SYNONYMS.items():
            fills = [{**f, name: w} for f in fills for words in values.values() for w in words]
        out.extend(template.format(**f) for f in fills)
    return out


def vocabulary() -> list[str]:
    """Every attribute word (for training tokenizers)."""
    return [w for values in SYNONYMS.values() for words in values.values() for w in words]


def parse_caption(text: str) -> dict[str, str]:
    """Attribute values a caption asks for, by keyword (longest synonym first); absent ones are left out."""
    text = text.lower()
    found = {}
    for name, values in SYNONYMS.items():
        matches = [(len(w), value) for value, words in values.items() for w in words
                   if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text)]
        if matches:
            found[name] = max(matches)[1]
    return found


def check_caption(text: str) -> Attributes:
    """Attributes of a caption that names every attribute, else a ValueError saying which are missing."""
    found = parse_caption(text)
    missing = [name for name in ATTRIBUTES if name not in found]
    if missing:
        raise ValueError(f"caption {text!r} does not name {missing}; use words from SYNONYMS")
    return Attributes(**found)
