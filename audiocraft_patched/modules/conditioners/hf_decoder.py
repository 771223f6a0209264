"""Decoder-only language models (GPT-2, Llama, Qwen2, ...): hidden states of a chosen layer.

No upstream counterpart. The base model (`GPT2Model`, `LlamaModel`, ...) is loaded, also from a
folder saved from its causal-LM class (the LM head is left out). Causal attention means a token
only sees the ones before it, so:
- texts are right-padded (real tokens keep positions 0..n-1, and padding never precedes them);
- `pooling='last'` (the last real token, which has seen the whole text) is the usual summary;
- a tokenizer without a padding token pads with its end-of-text (or unknown) token, masked out.
"""
from __future__ import annotations

import torch

from .hf_family import EncoderFamily, register_family, resolve_pretrained


@register_family
class DecoderOnlyFamily(EncoderFamily):
    """Causal language models used as text encoders."""

    name = "decoder-only"
    priority = -20

    @classmethod
    def matches(cls, name: str, config) -> bool:
        from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                            MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES)

        return (config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
                and config.model_type not in MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES
                and not getattr(config, "is_encoder_decoder", False))

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        tokenizer = resolve_pretrained(self.source, AutoTokenizer, subfolder=self.subfolder)
        if tokenizer.pad_token is None:
            # Any token will do: padded positions are masked out of attention and of the condition.
            fallback = next((t for t in (tokenizer.eos_token, tokenizer.unk_token, tokenizer.bos_token) if t), None)
            if fallback is None:
                raise ValueError(f"the tokenizer of {self.source!r} has no pad, eos, unk or bos token to pad with")
            tokenizer.pad_token = fallback
        tokenizer.padding_side = "right"
        return tokenizer

    def model_class(self, pooling: str):
        from transformers import AutoModel
        from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

        if self.config.model_type not in MODEL_MAPPING_NAMES:
            raise ValueError(f"{self.source!r} ({self.config.model_type}) has no base model class in transformers, "
                             "only task heads; its hidden states cannot be taken without the LM head's wrapper")
        return AutoModel

    def input_names(self, model, tokenizer) -> set[str]:
        # Never token_type_ids: GPT-2 would add the embedding of token 0 to every position.
        return {"input_ids", "attention_mask"}

    def encode(self, model, inputs: dict[str, torch.Tensor], layer: int | None, pooling: str) -> torch.Tensor:
        out = model(**inputs, use_cache=False, output_hidden_states=layer is not None)
        return out.last_hidden_state if layer is None else out.hidden_states[layer]
