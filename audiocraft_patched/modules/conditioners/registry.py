"""The conditioner registry: `model: <name>` in a config -> the class that builds it.

No upstream counterpart: upstream's `models/builders.py` (audiocraft 1.3.0) dispatches on the
conditioner type with an if/elif chain. Upstream configs name a type, then give its kwargs under
that name (`description: {model: t5, t5: {name: t5-base, ...}}`); `ENCODERS` is keyed by that
string, so they load unchanged (`"t5"` is an alias of `"hf"`). A class registered under several
names writes its config under the first one (`config_name`), which `BaseConditioner.config()` uses.
"""
from __future__ import annotations

from typing import Any, Callable

ENCODERS: dict[str, type] = {}


def register_encoder(*names: str) -> Callable[[type], type]:
    """Class decorator: make the class buildable as `model: <name>` for each of `names`."""
    if not names:
        raise ValueError("register_encoder needs at least one name")

    def wrap(cls: type) -> type:
        for name in names:
            if name in ENCODERS:
                raise KeyError(f"encoder {name!r} already registered (by {ENCODERS[name].__name__})")
            ENCODERS[name] = cls
        cls.config_name = names[0]  # the name its checkpoints are written under
        return cls
    return wrap


def build_conditioner(model: str, output_dim: int, **kwargs: Any):
    """Build the conditioner registered as `model` with its config kwargs (`device` included, as upstream)."""
    if model not in ENCODERS:
        raise KeyError(f"unknown conditioner {model!r}; known: {sorted(ENCODERS)}")
    return ENCODERS[model](output_dim=output_dim, **kwargs)
