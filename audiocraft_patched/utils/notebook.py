"""Audio players for notebooks; mirrors `audiocraft/utils/notebook.py` (audiocraft 1.3.0).

`display_audio(samples, sample_rate)` shows one player per batch item, as upstream's does with
`IPython.display.Audio`. The player is our own small object whose HTML embeds the clip as a WAV
data URI (peak-normalized, 16-bit, as IPython's player encodes it), so it needs no IPython to be
built, saved or tested; in a notebook (IPython present) it is displayed, elsewhere it is only
returned.
"""
from __future__ import annotations

import base64
import io
import math
import wave

import torch

from ..data.audio_utils import i16_pcm
from ..modules.errors import ValueAssertionError


class AudioPlayer:
    """An HTML5 audio player for one clip [C, T] (what a notebook renders for it)."""

    def __init__(self, wav: torch.Tensor, sample_rate: int):
        if wav.dim() != 2 or not wav.is_floating_point():
            raise ValueError(f"expected float audio [C, T], got {wav.dtype} of shape {tuple(wav.shape)}")
        self.wav = wav.detach().cpu().float()
        self.sample_rate = int(sample_rate)

    def wav_bytes(self) -> bytes:
        """The clip as a 16-bit WAV file, scaled to full scale (silence stays silence)."""
        peak = self.wav.abs().max().item() if self.wav.numel() else 0.0
        if not math.isfinite(peak):
            raise ValueError("the audio holds NaN or inf samples; nothing sensible can be played")
        scaled = self.wav / peak if peak > 0 else self.wav
        pcm = i16_pcm(scaled).t().contiguous()  # [T, C]: WAV frames interleave channels
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(self.wav.shape[0])
            out.setsampwidth(2)
            out.setframerate(self.sample_rate)
            out.writeframes(pcm.numpy().astype("<i2").tobytes())
        return buffer.getvalue()

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.wav_bytes()).decode("ascii")
        return f'<audio controls="controls"><source src="data:audio/wav;base64,{data}" type="audio/wav"/></audio>'

    def __repr__(self) -> str:
        channels, frames = self.wav.shape
        return f"AudioPlayer({channels} channel(s), {frames / self.sample_rate:.2f} s at {self.sample_rate} Hz)"


def display_audio(samples: torch.Tensor, sample_rate: int) -> list[AudioPlayer]:
    """Show a player per clip of `samples` ([B, C, T] or [C, T]) in a notebook; returns the players."""
    if samples.dim() not in (2, 3):
        raise ValueAssertionError(f"expected audio [B, C, T] or [C, T], got shape {tuple(samples.shape)}")
    samples = samples.detach().cpu()
    if samples.dim() == 2:
        samples = samples[None]
    players = [AudioPlayer(clip, sample_rate) for clip in samples]
    try:
        from IPython.display import display
    except ImportError:  # not in a notebook: nothing to render into
        return players
    for player in players:
        display(player)
    return players
