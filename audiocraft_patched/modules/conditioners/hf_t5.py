"""Encoders of seq2seq models (T5, FLAN-T5, mT5, UMT5): the text side of an encoder-decoder.

Mirrors what upstream's `T5Conditioner` (`audiocraft/modules/conditioners.py`, 1.3.0) runs:
`T5EncoderModel(**tokenizer_outputs).last_hidden_state`, here for any T5 size (FLAN-T5 is a T5
config with gated-gelu; upstream's width table misses flan-t5-xl/xxl), mT5 and UMT5, from a hub
id or a folder holding an encoder alone or the whole seq2seq model (only the encoder is loaded).
Relative positions: no length limit by default, as upstream.
"""
from __future__ import annotations

from .hf_family import EncoderFamily, register_family


@register_family
class Seq2SeqEncoderFamily(EncoderFamily):
    """The encoder stack of a T5-like encoder-decoder."""

    name = "t5"
    model_types = ("t5", "mt5", "umt5")

    def position_limit(self, model) -> int | None:
        return None  # relative attention buckets: any length, as upstream (which never truncates)
