"""CLAP text towers (laion/clap-htsat-*): token states, or the projected text embedding.

No upstream counterpart here (upstream's `CLAPEmbeddingConditioner` runs the laion_clap package
on audio or text). Works from a full `ClapModel` folder (only the text tower is loaded) or a
`ClapTextModel(WithProjection)` folder. `pooling='projected'` gives what
`ClapModel.get_text_features` returns: the pooled state through `text_projection`, L2-normalized.
"""
from __future__ import annotations

from .hf_clip import CLIPTextFamily
from .hf_family import register_family


@register_family
class CLAPTextFamily(CLIPTextFamily):
    """The RoBERTa-like text tower of CLAP."""

    name = "clap"
    model_types = ("clap", "clap_text_model")
    full_model_type = "clap"
    # One class for both: ClapTextModel does not load from a whole ClapModel's weights (other key prefix).
    text_classes = ("ClapTextModelWithProjection", "ClapTextModelWithProjection")
    normalize_projected = True  # CLAP's joint space is compared by cosine; get_text_features normalizes

    def position_limit(self, model) -> int | None:
        # RoBERTa numbering: positions start after padding_idx, so 514 embeddings hold 512 tokens.
        return model.config.max_position_embeddings - (model.config.pad_token_id or 0) - 1
