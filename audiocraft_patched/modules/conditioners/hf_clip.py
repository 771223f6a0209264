"""CLIP text towers: token states, or the projected text embedding (`pooling='projected'`).

No upstream counterpart. Works from a full `CLIPModel` folder (only the text tower is loaded)
or a `CLIPTextModel` / `CLIPTextModelWithProjection` folder. `pooling='projected'` gives one
vector per text, what `CLIPModel.get_text_features` returns (the EOS state through
`text_projection`), so the condition lives in CLIP's joint text-image space.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from .hf_family import POOLINGS, EncoderFamily, config_width, register_family


@register_family
class CLIPTextFamily(EncoderFamily):
    """The text tower of a contrastive dual encoder (CLIP; CLAP reuses it)."""

    name = "clip"
    model_types = ("clip", "clip_text_model")
    poolings = POOLINGS + ("projected",)
    full_model_type: ClassVar[str] = "clip"  # config of the whole dual encoder: take its `text_config`
    text_classes: ClassVar[tuple[str, str]] = ("CLIPTextModel", "CLIPTextModelWithProjection")
    normalize_projected: ClassVar[bool] = False  # `get_text_features` of CLIP does not normalize

    def default_normalize(self, pooling: str) -> bool:
        return self.normalize_projected and pooling == "projected"

    def text_config(self, pooling: str):
        if self.config.model_type != self.full_model_type:
            return self.config
        text_config = self.config.text_config
        # The tower's projection width is a field of the outer config (its text_config keeps a default).
        if isinstance(getattr(self.config, "projection_dim", None), int):
            text_config.projection_dim = self.config.projection_dim
        return text_config

    def model_class(self, pooling: str):
        import transformers

        return getattr(transformers, self.text_classes[pooling == "projected"])

    def load_model(self, pooling: str, dtype: torch.dtype, **kwargs) -> torch.nn.Module:
        return super().load_model(pooling, dtype, config=self.text_config(pooling), **kwargs)

    def width(self, model, pooling: str) -> int:
        if pooling == "projected":
            return model.config.projection_dim
        return config_width(model.config)

    def encode(self, model, inputs: dict[str, torch.Tensor], layer: int | None, pooling: str) -> torch.Tensor:
        if pooling != "projected":
            return super().encode(model, inputs, layer, pooling)
        if layer is not None:
            raise ValueError("pooling='projected' projects the final pooled state; it cannot use layer=...")
        return model(**inputs).text_embeds.unsqueeze(1)  # [B, 1, projection_dim]
