"""Import upstream audiocraft 1.3.0 as the reference for parity tests.

Upstream imports xformers, spacy, torchaudio, av and librosa at module level, though its
text-to-music path calls none of them on CPU with the 'torch' attention backend. We put tiny
stand-ins in ``sys.modules`` that raise if anything in them is actually used, so a parity test
can never silently run through a stub.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types

import torch


class _Unavailable(types.ModuleType):
    """A module whose attributes are placeholders that raise when used.

    Upstream imports names from these modules at import time (``from librosa import filters``),
    so attribute access must succeed; calling or instantiating what it got must not.
    """

    def __getattr__(self, item: str):
        if item.startswith("__"):
            raise AttributeError(item)
        where = f"{self.__name__}.{item}"

        def _refuse(*args, **kwargs):
            raise RuntimeError(f"stand-in {where} was used; the upstream path under test "
                               "should not need it")

        # A class, so that upstream may also subclass it at import time.
        return type(item, (), {"__init__": _refuse, "__call__": _refuse, "__getattr__": _refuse})


def _module(name: str, **attrs) -> types.ModuleType:
    mod = _Unavailable(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    mod.__path__ = []  # lets "import a.b" resolve submodules we register below
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


class _LowerTriangularMask:
    """Upstream only uses this as a causal flag for the torch SDPA backend."""


def install_stubs() -> None:
    """Register stand-ins for upstream's heavy optional imports (idempotent)."""
    if "audiocraft" in sys.modules:
        return
    xformers_ops = _module("xformers.ops", unbind=torch.unbind, LowerTriangularMask=_LowerTriangularMask)
    stubs = {
        "xformers": _module("xformers", ops=xformers_ops),
        "xformers.ops": xformers_ops,
        "spacy": _module("spacy"),
        "torchaudio": _module("torchaudio"),
        "torchaudio.functional": _module("torchaudio.functional"),
        "torchaudio.transforms": _module("torchaudio.transforms"),
        "av": _module("av"),
        "librosa": _module("librosa"),
        "librosa.filters": _module("librosa.filters"),
    }
    for name, mod in stubs.items():
        sys.modules.setdefault(name, mod)
        parent, _, child = name.rpartition(".")
        if parent:
            object.__setattr__(stubs[parent], child, mod)


def import_upstream():
    """Return the upstream ``audiocraft`` package, or None when it is not installed."""
    if importlib.util.find_spec("audiocraft") is None:
        return None
    install_stubs()
    import audiocraft  # noqa: F401
    import audiocraft.models  # noqa: F401
    return audiocraft
