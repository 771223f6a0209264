"""Checks of MusicGen's generation settings and texts, so bad values fail early with a message.

No upstream counterpart: upstream's `MusicGen.set_generation_params` stores whatever it gets, and
a NaN temperature or a duration of 1e-6 s surfaces later as a torch assert inside sampling
("probability tensor contains either inf, nan...") or as "cannot convert float NaN to integer".
Here every value is checked where it is set (`set_generation_params`) and again where it is used
(`generate`, since `generation_params` is a public dict), and texts are checked before they
reach a tokenizer.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

# A positive temperature this small is greedy decoding in all but name, and smaller ones overflow
# the logits (in float32, logits / 2.2e-308 is inf). 0 keeps upstream's meaning: greedy decoding.
MIN_TEMPERATURE = 1e-6
# |cfg_coef| past this turns the guided logits into inf (and then NaN) for no musical gain:
# released models use 3, sweeps rarely go past 20.
MAX_CFG_COEF = 1000.0


def _real(name: str, value: Any) -> float:
    """`value` as a finite float, or a TypeError/ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def check_generation_params(*, use_sampling: Any, top_k: Any, top_p: Any, temperature: Any, cfg_coef: Any,
                            two_step_cfg: Any, duration: Any, extend_stride: Any, frame_rate: float,
                            max_duration: float) -> None:
    """Raise a ValueError/TypeError saying what to fix when a generation setting cannot work.

    Accepted: top_k a whole number >= 0 (0: no top-k), 0 <= top_p <= 1, temperature 0 (greedy,
    as upstream) or >= MIN_TEMPERATURE, |cfg_coef| <= MAX_CFG_COEF, a duration of at least one
    frame, and past `max_duration` an extend_stride of at least one frame and below max_duration.
    """
    for name, flag in (("use_sampling", use_sampling), ("two_step_cfg", two_step_cfg)):
        if not isinstance(flag, bool) and flag not in (0, 1):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
        raise TypeError(f"top_k must be a whole number (0: no top-k filtering), got {type(top_k).__name__} {top_k!r}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0: no top-k filtering), got {top_k}")
    top_p = _real("top_p", top_p)
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1] (0: no nucleus filtering), got {top_p}")
    temperature = _real("temperature", temperature)
    if temperature < 0 or 0 < temperature < MIN_TEMPERATURE:
        raise ValueError(f"temperature must be 0 (greedy decoding) or at least {MIN_TEMPERATURE:g}, got "
                         f"{temperature:g}: smaller ones overflow the logits; use 0 or use_sampling=False for greedy "
                         "decoding")
    cfg_coef = _real("cfg_coef", cfg_coef)
    if abs(cfg_coef) > MAX_CFG_COEF:
        raise ValueError(f"cfg_coef must be within +-{MAX_CFG_COEF:g} (typical: 1 to 10), got {cfg_coef:g}")
    duration = _real("duration", duration)
    frame = 1.0 / frame_rate
    if duration <= 0 or int(duration * frame_rate) < 1:
        raise ValueError(f"duration must be > 0 seconds and at least one frame of the model ({frame:.4g} s at "
                         f"{frame_rate:g} frames/s), got {duration:g} s")
    if duration > max_duration:
        extend_stride = _real("extend_stride", extend_stride)
        if not 0 < extend_stride < max_duration or int(extend_stride * frame_rate) < 1:
            raise ValueError(f"generating {duration:g} s needs windows of max_duration={max_duration:g} s advancing "
                             f"by extend_stride in [{frame:.4g}, {max_duration:g}) s; got {extend_stride:g}: set "
                             "set_generation_params(extend_stride=...) or the command line's --extend-stride, or "
                             "leave it unset (None: derived from max_duration)")


def check_generation_dict(params: Mapping[str, Any], *, duration: Any, extend_stride: Any, frame_rate: float,
                          max_duration: float) -> None:
    """`check_generation_params` on a model's `generation_params` dict (keys as `LMModel.generate` names them).

    Keys a model does not use (e.g. MAGNeT has no `two_step_cfg`) are not checked.
    """
    check_generation_params(use_sampling=params.get("use_sampling", True), top_k=params.get("top_k", 0),
                            top_p=params.get("top_p", 0.0), temperature=params.get("temp", 1.0),
                            cfg_coef=params.get("cfg_coef", 1.0), two_step_cfg=params.get("two_step_cfg", False),
                            duration=duration, extend_stride=extend_stride, frame_rate=frame_rate,
                            max_duration=max_duration)


def check_texts(texts: Any, what: str = "descriptions") -> list[str | None]:
    """`texts` as a list of str/None, or a TypeError/ValueError that says what was given instead.

    Catches the inputs that iterate into something else: one string (its characters), bytes
    (their integer values), a dict (its keys); and strings that are not valid Unicode (a lone
    surrogate, e.g. from decoding with errors='surrogateescape'), which no tokenizer can encode.
    """
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of strings, not one string: wrap it as [text]")
    if isinstance(texts, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be a list of str, got {type(texts).__name__}: decode it first, "
                        "e.g. [data.decode('utf-8')]")
    if isinstance(texts, Mapping):
        raise TypeError(f"{what} must be a list of strings, got a {type(texts).__name__}; for several conditions "
                        "per sample, pass conditions=[{'description': ..., ...}] instead")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"{what} must be a list of strings, got {type(texts).__name__}") from None
    if not texts:
        raise ValueError(f"{what} is empty: give at least one text (or None for an unconditional sample)")
    bad = [(i, t) for i, t in enumerate(texts) if t is not None and not isinstance(t, str)]
    if bad:
        i, first = bad[0]
        raise TypeError(f"{what} must be str or None, got {sorted({type(t).__name__ for _, t in bad})} "
                        f"({what}[{i}] = {first!r:.60})")
    for i, text in enumerate(texts):
        check_unicode(text, f"{what}[{i}]")
    return texts


def check_unicode(text: str | None, where: str) -> None:
    """Refuse a string holding a lone surrogate (not encodable as UTF-8), naming the position."""
    if text is None:
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{where} holds a lone surrogate {text[exc.start]!r} at position {exc.start}: not valid "
                         "Unicode text; fix the string (e.g. text.encode('utf-8', 'replace').decode())") from None
