"""Chroma features of a waveform: the melody condition of MusicGen-melody.

Mirrors `audiocraft/modules/chroma.py` (audiocraft 1.3.0): `ChromaExtractor`, same arguments,
same output `[B, frames, n_chroma]`. Upstream takes its power spectrogram from torchaudio's
`Spectrogram` and its filterbank from `librosa.filters.chroma`; both are written here with torch
alone, to the same definitions (tests/modules/test_chroma.py checks them against librosa and
against upstream's extractor), so neither package is needed at run time.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def chroma_filterbank(sample_rate: float, n_fft: int, n_chroma: int = 12, tuning: float = 0.0,
                      ctroct: float = 5.0, octwidth: float | None = 2.0, base_c: bool = True) -> torch.Tensor:
    """`librosa.filters.chroma(sr, n_fft, n_chroma, tuning, ctroct, octwidth, norm=2, base_c)`.

    Returns [n_chroma, 1 + n_fft // 2].

    Each FFT bin spreads over the chroma bins as a Gaussian bump around its pitch class (width:
    the bin's spacing in chroma bins, at least one), columns have unit L2 norm, then a Gaussian
    over octaves centred on octave `ctroct` weights the bins. Computed in float64 and returned
    as float32, as librosa does.
    """
    if n_fft < 2 or n_chroma < 1 or sample_rate <= 0:
        raise ValueError(f"need n_fft >= 2, n_chroma >= 1, sample_rate > 0; got {n_fft}, {n_chroma}, {sample_rate}")
    f64 = torch.float64
    frequencies = torch.arange(1, n_fft, dtype=f64) * (sample_rate / n_fft)  # the FFT bins but DC
    a440 = 440.0 * 2.0 ** (tuning / n_chroma)
    bins = n_chroma * torch.log2(frequencies / (a440 / 16))  # pitch in chroma bins above C0-ish
    # DC gets a made-up pitch 1.5 octaves below the first bin (librosa's choice): broad, half rotated.
    bins = torch.cat([bins[:1] - 1.5 * n_chroma, bins])
    widths = torch.cat([torch.clamp(bins[1:] - bins[:-1], min=1.0), torch.ones(1, dtype=f64)])
    distance = bins[None, :] - torch.arange(n_chroma, dtype=f64)[:, None]  # [n_chroma, n_fft]
    half = float(round(n_chroma / 2))
    # Fold the distance into [-n_chroma / 2, n_chroma / 2); the offset keeps the remainder's argument positive.
    distance = torch.remainder(distance + half + 10 * n_chroma, n_chroma) - half
    weights = torch.exp(-0.5 * (2 * distance / widths[None, :]) ** 2)
    norms = weights.pow(2).sum(0, keepdim=True).pow(0.5)
    weights = weights / torch.where(norms < torch.finfo(f64).tiny, torch.ones_like(norms), norms)
    if octwidth is not None:
        weights = weights * torch.exp(-0.5 * ((bins / n_chroma - ctroct) / octwidth) ** 2)[None, :]
    if base_c:  # start at C rather than A
        weights = torch.roll(weights, -3 * (n_chroma // 12), dims=0)
    return weights[:, :1 + n_fft // 2].to(torch.float32).contiguous()


class Spectrogram(nn.Module):
    """torchaudio's `Spectrogram(n_fft, win_length, hop_length, power=2, center=True, pad=0, normalized=True)`.

    `wav` [..., T] -> [..., 1 + n_fft // 2, frames]: reflect-padded centred frames under a Hann
    window, the STFT divided by the window's L2 norm (torchaudio's `normalized=True`), squared
    magnitude. The window is a saved buffer, as torchaudio's: upstream checkpoints hold it
    (`...chroma.spec.window`).
    """

    def __init__(self, n_fft: int, win_length: int, hop_length: int):
        super().__init__()
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.register_buffer("window", torch.hann_window(win_length))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        shape = wav.shape
        spec = torch.stft(wav.reshape(-1, shape[-1]), n_fft=self.n_fft, hop_length=self.hop_length,
                          win_length=self.win_length, window=self.window, center=True, pad_mode="reflect",
                          normalized=False, onesided=True, return_complex=True)
        spec = spec.reshape(shape[:-1] + spec.shape[-2:])
        spec = spec / self.window.pow(2.0).sum().sqrt()
        return spec.abs().pow(2.0)


class ChromaExtractor(nn.Module):
    """Chroma per STFT frame, normalized, optionally quantized to a one-hot of the strongest pitch class.

    Args:
        sample_rate: sample rate of the input waveforms.
        n_chroma: pitch classes.
        radix2_exp: STFT window of 2 ** radix2_exp samples (unless `winlen` is given).
        nfft: FFT size (default: the window length).
        winlen: window length (default: 2 ** radix2_exp).
        winhop: hop between frames (default: a quarter of the window).
        argmax: one-hot of the strongest pitch class per frame (what MusicGen-melody uses).
        norm: the p of the per-frame normalization (default: max norm).
    """

    def __init__(self, sample_rate: int, n_chroma: int = 12, radix2_exp: int = 12, nfft: int | None = None,
                 winlen: int | None = None, winhop: int | None = None, argmax: bool = False,
                 norm: float = math.inf):
        super().__init__()
        self.winlen = winlen or 2 ** radix2_exp
        self.nfft = nfft or self.winlen
        self.winhop = winhop or self.winlen // 4
        if self.winlen > self.nfft:
            raise ValueError(f"window length {self.winlen} is longer than the FFT size {self.nfft}")
        self.sample_rate = sample_rate
        self.n_chroma = n_chroma
        self.norm = norm
        self.argmax = argmax
        # Derived from the arguments, hence not saved in checkpoints (as upstream).
        self.register_buffer("fbanks", chroma_filterbank(sample_rate, self.nfft, n_chroma=n_chroma), persistent=False)
        self.spec = Spectrogram(self.nfft, self.winlen, self.winhop)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """`wav` [B, 1, T] (or [B, T]) -> chroma [B, frames, n_chroma], frames = 1 + max(T, nfft) // winhop."""
        if wav.shape[-1] < self.nfft:
            # A null condition is 1 sample long: centre it in nfft zeros so that the STFT has a frame.
            pad = self.nfft - wav.shape[-1]
            wav = F.pad(wav, (pad // 2, pad - pad // 2))
        spec = self.spec(wav)
        if spec.dim() == 4:
            spec = spec.squeeze(1)  # [B, F, frames]
        # Same op order as upstream (project, normalize over classes, then transpose): bit-equal output.
        chroma = torch.einsum("cf,...ft->...ct", self.fbanks, spec)
        chroma = F.normalize(chroma, p=self.norm, dim=-2, eps=1e-6).transpose(-1, -2)
        if self.argmax:
            # Silent frames are all zero: argmax picks the first class there, as upstream.
            chroma = F.one_hot(chroma.argmax(-1), self.n_chroma).to(chroma.dtype)
        return chroma
