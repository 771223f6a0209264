"""Encoder-only text models: BERT, RoBERTa, XLM-R, DeBERTa(-v2) and the rest of transformers' text encoders.

No upstream counterpart. Any model type that transformers lists as a text encoder
(`AutoModelForTextEncoding`) and that is not an encoder-decoder is loaded as its base model
(`BertModel`, `XLMRobertaModel`, ...), so a folder saved from a task model (e.g.
`BertForMaskedLM`) works too. Learned absolute positions bound the length: longer texts are
truncated to the model's limit, with a warning.
"""
from __future__ import annotations

from .hf_family import EncoderFamily, register_family


@register_family
class EncoderOnlyFamily(EncoderFamily):
    """Bidirectional text encoders with a `last_hidden_state`."""

    name = "encoder-only"
    priority = -10  # after families that claim specific model types or folder formats

    @classmethod
    def matches(cls, name: str, config) -> bool:
        from transformers.models.auto.modeling_auto import MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES

        return (config.model_type in MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES
                and not getattr(config, "is_encoder_decoder", False))

    def position_limit(self, model) -> int | None:
        config = model.config
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            return None
        if getattr(config, "relative_attention", False) and not getattr(config, "position_biased_input", True):
            return None  # DeBERTa-v2: relative positions only
        limit = getattr(config, "max_position_embeddings", None)
        if not isinstance(limit, int):
            return None
        # RoBERTa-style models number positions from padding_idx + 1: 514 embeddings hold 512 tokens.
        if config.model_type in ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert"):
            limit -= (config.pad_token_id or 0) + 1
        return limit
