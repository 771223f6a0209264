"""Attach a conditioner to a built MusicGen LM, and zero-shot image / audio conditioning through a joint model.

No upstream counterpart. `add_cross_modal_conditioner` takes an LM whose text conditioner embeds
texts in the joint space of CLIP (image-text) or CLAP (audio-text), `pooling='projected'`, and
adds the joint model's other tower as a new conditioner that reuses the text side's adapter and
`output_proj` (`TowerConditioner.from_text_conditioner`). Nothing is trained here: the text side
must already work, either aligned to a released MusicGen with `align` (text only, no audio
needed) or trained with the model. An image (or clip) then conditions the LM as a text with the
same joint embedding would; the joint model's modality gap makes it an approximation.

    model = MusicGen.get_pretrained("aligned-clip")      # description: hf_adapter on CLIP, projected
    add_cross_modal_conditioner(model.lm)                # -> 'image'
    model.generate(images=["cat.png"])
    export_musicgen(model.lm, model.lm.cfg, "aligned-clip", "aligned-clip-image")  # align/export.py: a checkpoint
"""
from __future__ import annotations

from .audio_embed import CLAPAudioConditioner
from .base import BaseConditioner
from .fuser import ConditionFuser
from .hf_encoder import HFEncoderConditioner
from .vision import HFImageConditioner


def attach_conditioner(lm, attribute: str, conditioner: BaseConditioner, fuse: str = "cross") -> None:
    """Add `conditioner` for `attribute` to a built LM (its provider and fuser).

    `align.export.export_musicgen(lm, lm.cfg, source, out)` then writes a checkpoint that records
    it (the writer takes every conditioner's entry from its `config()`).

    Args:
        lm: an `LMModel`.
        attribute: the new attribute's name (e.g. 'image').
        conditioner: what conditions it.
        fuse: 'cross', 'prepend', 'sum' or 'input_interpolate'.
    """
    provider = lm.condition_provider
    if attribute in provider.conditioners:
        raise ValueError(f"the model already has a conditioner for {attribute!r}; choose another attribute name")
    if fuse not in ConditionFuser.FUSING_METHODS:
        raise ValueError(f"fuse must be one of {ConditionFuser.FUSING_METHODS}, got {fuse!r}")
    if fuse == "cross" and not any(layer.cross_attention is not None for layer in lm.transformer.layers):
        raise ValueError("this LM has no cross-attention; fuse the new condition with 'prepend' or 'sum'")
    weight = lm.linears[0].weight  # the new condition joins the others in the LM's device and dtype
    provider.conditioners[attribute] = conditioner.to(device=weight.device, dtype=weight.dtype)
    lm.fuser.add(attribute, fuse)


def add_cross_modal_conditioner(lm, source: str = "description", attribute: str | None = None,
                                name: str | None = None) -> str:
    """Zero-shot: condition `lm` on images (CLIP) or audio (CLAP) through its joint-space text conditioner.

    Builds the joint model's other tower with `TowerConditioner.from_text_conditioner` (the text
    side's adapter and projection, copied) and attaches it with the text's fuse method. Needs
    no training of its own, but the text conditioner must already work (aligned with `align`,
    or trained): see `vision.py`'s module docstring.

    Args:
        lm: an `LMModel` whose `source` conditioner is a CLIP or CLAP text tower with pooling='projected'.
        source: the text attribute whose conditioner is reused.
        attribute: the new attribute (default: 'image' for CLIP, 'audio' for CLAP).
        name: the joint model's folder, if the text tower was loaded from a text-only folder.
    Returns:
        the new attribute's name.
    """
    provider = lm.condition_provider
    if source not in provider.text_conditions:
        raise ValueError(f"{source!r} is not a text conditioner of this model (text conditioners: "
                         f"{provider.text_conditions})")
    text = provider.conditioners[source]
    family = text.family.name if isinstance(text, HFEncoderConditioner) else None
    kinds = {"clip": (HFImageConditioner, "image"), "clap": (CLAPAudioConditioner, "audio")}
    if family not in kinds:
        raise ValueError(f"the {source!r} conditioner is not a CLIP or CLAP text tower (family {family!r}); "
                         "zero-shot image/audio conditioning needs a joint model")
    cls, default = kinds[family]
    attribute = attribute or default
    cond = cls.from_text_conditioner(text, name=name)
    attach_conditioner(lm, attribute, cond, fuse=lm.fuser.cond2fuse[source])
    return attribute
