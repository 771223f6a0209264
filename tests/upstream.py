"""Import upstream audiocraft 1.3.0 as the reference for parity tests.

Upstream imports xformers, spacy, torchaudio, av and librosa at module level, though its
text-to-music path calls none of them on CPU with the 'torch' attention backend. We put tiny
stand-ins in ``sys.modules`` that raise if anything in them is actually used, so a parity test
can never silently run through a stub. Exceptions: for the melody path, torchaudio's
``Spectrogram`` is a working stand-in on ``torch.stft`` (``_Spectrogram``), and librosa is the
real package when it is installed; for MAGNeT (which upstream runs on xformers),
``xformers.ops.memory_efficient_attention`` implements xformers' semantics.
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
    """Upstream only uses this as a causal flag (torch backend) or as xformers' causal bias (below)."""


def _memory_efficient_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_bias=None,
                                p: float = 0.0, scale: float | None = None) -> torch.Tensor:
    """xformers.ops.memory_efficient_attention, written from its documented semantics.

    Inputs [B, M, H, K] (time before heads, upstream's xformers layout); `attn_bias` None, a
    `LowerTriangularMask` (query i sees keys j <= i) or an additive tensor [B, H, M, N];
    output softmax(q k^T * scale + bias) v, scale 1/sqrt(K) by default. No mask means every
    query sees every key (non-causal), which MAGNeT's stage 0 relies on; upstream's own torch
    fallback instead reads any mask as "causal". Dropout is refused (parity runs in eval).
    """
    if p:
        raise RuntimeError("the xformers stand-in runs without dropout (eval mode only)")
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    q, k, v = (x.transpose(1, 2) for x in (query, key, value))  # [B, H, M, K]
    weights = torch.einsum("bhmk,bhnk->bhmn", q * scale, k)
    if isinstance(attn_bias, _LowerTriangularMask):
        M, N = weights.shape[-2:]
        weights = weights.masked_fill(~torch.ones(M, N, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    elif attn_bias is not None:
        weights = weights + attn_bias.to(weights.dtype)
    return torch.einsum("bhmn,bhnk->bhmk", torch.softmax(weights, dim=-1), v).transpose(1, 2)


class _Spectrogram(torch.nn.Module):
    """torchaudio.transforms.Spectrogram, on torch.stft, for upstream's ChromaExtractor (melody).

    Written from torchaudio's definition (`functional.spectrogram`): constant `pad`, the window
    of `window_fn(win_length)` kept as a (saved) buffer, centred reflect-padded frames,
    `normalized=True` dividing the STFT by the window's L2 norm, magnitude to `power`.
    """

    def __init__(self, n_fft: int = 400, win_length=None, hop_length=None, pad: int = 0,
                 window_fn=torch.hann_window, power=2.0, normalized=False, wkwargs=None, center: bool = True,
                 pad_mode: str = "reflect", onesided: bool = True):
        super().__init__()
        self.n_fft, self.pad, self.power, self.normalized = n_fft, pad, power, normalized
        self.win_length = win_length or n_fft
        self.hop_length = hop_length or self.win_length // 2
        self.center, self.pad_mode, self.onesided = center, pad_mode, onesided
        self.register_buffer("window", window_fn(self.win_length, **(wkwargs or {})))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if self.pad > 0:
            waveform = torch.nn.functional.pad(waveform, (self.pad, self.pad), "constant")
        shape = waveform.size()
        spec = torch.stft(waveform.reshape(-1, shape[-1]), self.n_fft, hop_length=self.hop_length,
                          win_length=self.win_length, window=self.window, center=self.center,
                          pad_mode=self.pad_mode, normalized=False, onesided=self.onesided, return_complex=True)
        spec = spec.reshape(shape[:-1] + spec.shape[-2:])
        if self.normalized in (True, "window"):
            spec = spec / self.window.pow(2.0).sum().sqrt()
        return spec if self.power is None else spec.abs().pow(self.power)


def install_stubs() -> None:
    """Register stand-ins for upstream's heavy optional imports (idempotent)."""
    if "audiocraft" in sys.modules:
        return
    xformers_ops = _module("xformers.ops", unbind=torch.unbind, LowerTriangularMask=_LowerTriangularMask,
                           memory_efficient_attention=_memory_efficient_attention)
    stubs = {
        "xformers": _module("xformers", ops=xformers_ops),
        "xformers.ops": xformers_ops,
        "spacy": _module("spacy"),
        "torchaudio": _module("torchaudio"),
        "torchaudio.functional": _module("torchaudio.functional"),
        "torchaudio.transforms": _module("torchaudio.transforms", Spectrogram=_Spectrogram),
        "av": _module("av"),
    }
    # The real librosa when installed (requirements-upstream.txt): its chroma filterbank is what
    # upstream's melody conditioner uses.
    if importlib.util.find_spec("librosa") is None:
        stubs.update({"librosa": _module("librosa"), "librosa.filters": _module("librosa.filters")})
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
