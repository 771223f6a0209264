"""A procedural music world with known attributes, its captions, analyzers and adherence scores.

No upstream counterpart: the proving ground for the embedded default model and encoder swaps.
See README.md in this folder.
"""
from .analyze import adherence, analyze, chance_adherence, score
from .captions import caption, parse_caption
from .synth import ATTRIBUTES, SAMPLE_RATE, Attributes, render

__all__ = ["ATTRIBUTES", "SAMPLE_RATE", "Attributes", "adherence", "analyze", "caption", "chance_adherence",
           "parse_caption", "render", "score"]
