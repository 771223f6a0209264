"""Per-sample `ConditioningAttributes` from what `MusicGen.generate` is given.

No upstream counterpart: upstream's `generate` takes texts only (and `generate_with_chroma` a
melody), building `ConditioningAttributes(text={'description': ...})` inline. Here the inputs
are columns, one value per sample (`None` meaning absent: the null condition), and each column
goes to one attribute of the model's conditioners:

    attributes = text_attributes(provider, ["calm piano", None])
    set_column(attributes, "wav", "self_wav", melodies)  # another kind of condition on top

`build_attributes` is `generate`'s dispatch: texts, `images=`, `audio_prompts=`, or
`conditions=` (a dict or `ConditioningAttributes` per sample).
"""
from __future__ import annotations

from typing import Any, Sequence

from .audio_embed import as_audio_prompt_list, read_audio_prompt
from .base import ConditioningAttributes, ConditioningProvider
from .vision import as_image_list


def text_attributes(provider: ConditioningProvider, descriptions: Sequence[str | None]) -> list[ConditioningAttributes]:
    """One sample per description, as its 'description' text (None: the unconditional row)."""
    # A model without a 'description' conditioner (e.g. image-only) gets no text attribute.
    has_text = "description" in provider.conditioners
    return [ConditioningAttributes(text={"description": d}) if has_text or d is not None
            else ConditioningAttributes() for d in descriptions]


def set_column(attributes: list[ConditioningAttributes], kind: str, name: str, values: Sequence[Any]) -> None:
    """Give sample i the `kind` ('text', 'wav', 'image') attribute `name` = values[i], in place.

    An absent clip (None) is left out: the provider reads it as the null condition.
    """
    if len(values) != len(attributes):
        raise ValueError(f"{len(values)} values of {name!r} for {len(attributes)} samples: give one per sample "
                         "(None for an absent one)")
    for sample, value in zip(attributes, values):
        if value is not None or kind != "wav":
            sample[kind][name] = value


def only_conditioner(provider: ConditioningProvider, kind: str, argument: str) -> str:
    """The attribute of the model's one conditioner of `kind` ('image' or 'wav'), for `argument`'s error."""
    names = provider.image_conditions if kind == "image" else provider.wav_conditions
    if len(names) != 1:
        have = {k: type(v).__name__ for k, v in provider.conditioners.items()}
        reason = "no" if not names else f"several ({names}) of that kind; use conditions=[{{name: ...}}] with"
        raise ValueError(f"{argument}= needs a model with one {'image' if kind == 'image' else 'audio'} "
                         f"conditioner; this one has {reason} (conditioners: {have})")
    return names[0]


def multimodal_attributes(provider: ConditioningProvider, descriptions: Sequence[str | None] | None, images: Any,
                          audio_prompts: Any, sample_rate: int | None) -> list[ConditioningAttributes]:
    """Samples from texts, images and reference clips, each a list with one entry per sample (or None)."""
    columns: dict[str, tuple[str, list]] = {}
    if descriptions is not None:
        columns["description"] = ("text", list(descriptions))
    if images is not None:
        columns[only_conditioner(provider, "image", "images")] = ("image", as_image_list(images))
    if audio_prompts is not None:
        clips = [read_audio_prompt(p, sample_rate, f"audio prompt {i}")
                 for i, p in enumerate(as_audio_prompt_list(audio_prompts))]
        columns[only_conditioner(provider, "wav", "audio_prompts")] = ("wav", clips)
    sizes = {name: len(values) for name, (_, values) in columns.items()}
    if len(set(sizes.values())) != 1 or not next(iter(sizes.values())):
        raise ValueError(f"give one entry per sample (None for an absent one) to each argument; got {sizes}")
    attributes = [ConditioningAttributes() for _ in range(next(iter(sizes.values())))]
    for name, (kind, values) in columns.items():
        set_column(attributes, kind, name, values)
    return attributes


def attributes_from_conditions(provider: ConditioningProvider, conditions: Sequence[Any],
                               sample_rate: int | None) -> list[ConditioningAttributes]:
    """Samples given as `ConditioningAttributes`, or dicts {attribute name: value} (clips read like audio prompts)."""
    kinds = {**{n: "text" for n in provider.text_conditions}, **{n: "wav" for n in provider.wav_conditions},
             **{n: "image" for n in provider.image_conditions}}
    conditions = list(conditions)
    if not conditions:
        raise ValueError("conditions is empty: give one ConditioningAttributes or dict per sample")
    attributes = []
    for i, item in enumerate(conditions):
        if isinstance(item, ConditioningAttributes):
            attributes.append(item)
            continue
        if not isinstance(item, dict):
            raise TypeError(f"conditions[{i}] must be a ConditioningAttributes or a dict, got {type(item).__name__}")
        unknown = sorted(set(item) - set(kinds))
        if unknown:
            raise KeyError(f"conditions[{i}] names {unknown}, which this model has no conditioner for; it has {kinds}")
        sample = ConditioningAttributes()
        for name, value in item.items():
            if kinds[name] == "wav":
                value = read_audio_prompt(value, sample_rate, f"conditions[{i}][{name!r}]")
            sample[kinds[name]][name] = value
        attributes.append(sample)
    return attributes


def build_attributes(provider: ConditioningProvider, descriptions: Sequence[str | None] | None = None,
                     images: Any = None, audio_prompts: Any = None, audio_prompt_sample_rate: int | None = None,
                     conditions: Sequence[Any] | None = None) -> list[ConditioningAttributes]:
    """The samples of one `generate` call (see `MusicGen.generate` for the arguments); texts already checked."""
    if conditions is not None:
        if any(x is not None for x in (descriptions, images, audio_prompts)):
            raise ValueError("pass either conditions= or descriptions / images / audio_prompts, not both")
        return attributes_from_conditions(provider, conditions, audio_prompt_sample_rate)
    if images is None and audio_prompts is None:
        if descriptions is None:
            raise ValueError("nothing to condition on: give descriptions, images=, audio_prompts= or conditions= "
                             "(or call generate_unconditional)")
        return text_attributes(provider, descriptions)
    return multimodal_attributes(provider, descriptions, images, audio_prompts, audio_prompt_sample_rate)
