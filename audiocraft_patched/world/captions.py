"""Captions of world clips: templates x synonyms, a training set and a held-out set of paraphrases.

Our own code (no upstream counterpart). In English both sets name the attributes with the same
words; they differ in sentence structure: no held-out template is ever seen in training, so
adherence on them measures whether the model follows the words, not memorised sentences.
The Chinese captions (`language="zh"`) go further: their held-out set also uses synonyms that
training never sees (嘹亮 for 响亮, 飞快 for 快速, ...), each sharing a morpheme with a trained word,
as Chinese synonyms often do.
`parallel_pairs` gives (Chinese, English) captions of the same clips, for `align --pairs`.
"""
from __future__ import annotations

import re

import numpy as np

from .synth import ATTRIBUTES, Attributes, random_attributes

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

# Chinese words per split: every slot is grammatical with each of them (register: a noun for
# "在…" and "…的"; tempo and loudness: adjectives; density: a noun phrase for the hi-hats).
SYNONYMS_ZH: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "train": {
        "instrument": {"flute": ("长笛",), "clarinet": ("单簧管",), "trumpet": ("小号",)},
        "register": {"low": ("低音区",), "mid": ("中音区",), "high": ("高音区",)},
        "tempo": {"slow": ("缓慢", "舒缓"), "fast": ("快速", "轻快")},
        "density": {"sparse": ("稀疏的踩镲", "零星的踩镲声"), "dense": ("密集的踩镲", "繁密的踩镲声")},
        "loudness": {"quiet": ("轻柔", "柔和"), "loud": ("响亮", "洪亮")},
    },
    "heldout": {
        "instrument": {"flute": ("长笛",), "clarinet": ("单簧管",), "trumpet": ("小号",)},
        "register": {"low": ("低音域",), "mid": ("中音域",), "high": ("高音域",)},
        "tempo": {"slow": ("慢悠悠",), "fast": ("飞快",)},
        "density": {"sparse": ("稀稀落落的踩镲",), "dense": ("细密的踩镲",)},
        "loudness": {"quiet": ("温柔",), "loud": ("嘹亮",)},
    },
}
TRAIN_TEMPLATES_ZH = (
    "一段{loudness}、{tempo}的{instrument}旋律，{register}，{density}",
    "{instrument}独奏，{register}，{tempo}，{loudness}，伴有{density}",
    "{density}，配上一支{loudness}的{instrument}，在{register}演奏{tempo}的曲调",
    "{loudness}的音乐：{instrument}，{register}，节奏{tempo}，{density}",
    "{register}的{instrument}，{tempo}而{loudness}，{density}",
    "{tempo}的{instrument}曲，{register}，{loudness}，背景是{density}",
    "一支{instrument}在{register}奏出{tempo}的旋律，音色{loudness}，{density}相伴",
    "给我一段{register}的{instrument}，要{tempo}、{loudness}，加上{density}",
    "{instrument}，{tempo}，{register}，{loudness}，{density}",
    "这是一段{tempo}的{instrument}演奏，{register}，{loudness}，还有{density}",
    "{loudness}、{tempo}的{instrument}，位于{register}，{density}点缀其间",
    "在{register}，一支{instrument}奏着{tempo}的乐句，声音{loudness}，伴随{density}",
    "{density}之上，{instrument}在{register}奏出{loudness}而{tempo}的乐音",
)
HELDOUT_TEMPLATES_ZH = (
    "想象一下：{density}衬托着一支{instrument}，它在{register}吹出{tempo}又{loudness}的旋律",
    "这首曲子由{instrument}在{register}演奏，{tempo}、{loudness}，{density}贯穿始终",
    "请来一段{instrument}：{register}、{tempo}、{loudness}，再加上{density}",
)
SPLITS_ZH = {"train": TRAIN_TEMPLATES_ZH, "heldout": HELDOUT_TEMPLATES_ZH}
LANGUAGES = ("en", "zh")


def _tables(split: str, language: str) -> tuple[tuple[str, ...], dict[str, dict[str, tuple[str, ...]]]]:
    """(templates, synonyms) of one split and language."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    if language == "zh":
        return SPLITS_ZH[split], SYNONYMS_ZH[split]
    return SPLITS[split], SYNONYMS


def caption(attrs: Attributes, rng: np.random.Generator, split: str = "train", language: str = "en") -> str:
    """A random caption of `attrs` from the `split` templates ('train' or 'heldout') in `language` ('en', 'zh')."""
    templates, synonyms = _tables(split, language)
    words = {name: synonyms[name][value][rng.integers(len(synonyms[name][value]))]
             for name, value in attrs.as_dict().items()}
    return templates[rng.integers(len(templates))].format(**words)


def all_captions(split: str = "train", language: str = "en") -> list[str]:
    """Every caption of `split`: every template with every attribute set and synonym choice."""
    templates, synonyms = _tables(split, language)
    out = []
    for template in templates:
        fills = [{}]
        for name, values in synonyms.items():
            fills = [{**f, name: w} for f in fills for words in values.values() for w in words]
        out.extend(template.format(**f) for f in fills)
    return out


def parallel_pairs(n: int, seed: int = 0, split: str = "train") -> list[tuple[str, str]]:
    """`n` (Chinese, English) captions of the same random attribute sets, each drawn independently."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        attrs = random_attributes(rng)
        pairs.append((caption(attrs, rng, split, "zh"), caption(attrs, rng, split, "en")))
    return pairs


def english_pairs(n: int, seed: int = 0, split: str = "train") -> list[tuple[str, str]]:
    """`n` pairs of two English captions of the same random attribute sets (student, teacher).

    Mixed into `align --pairs` data, they keep the aligned encoder reading English too.
    """
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        attrs = random_attributes(rng)
        pairs.append((caption(attrs, rng, split), caption(attrs, rng, split)))
    return pairs


def vocabulary(language: str = "en") -> list[str]:
    """Every attribute word of the training captions (for training tokenizers)."""
    synonyms = _tables("train", language)[1]
    return [w for values in synonyms.values() for words in values.values() for w in words]


def _found(word: str, text: str) -> bool:
    if word.isascii():  # English: whole words only
        return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None
    return word in text  # Chinese has no spaces between words


def parse_caption(text: str) -> dict[str, str]:
    """Attribute values a caption (English or Chinese) asks for, by keyword (longest synonym first).

    Absent attributes are left out.
    """
    text = text.lower()
    found = {}
    for name in SYNONYMS:
        tables = (SYNONYMS[name], SYNONYMS_ZH["train"][name], SYNONYMS_ZH["heldout"][name])
        matches = [(len(w), value) for table in tables for value, words in table.items() for w in words
                   if _found(w, text)]
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
