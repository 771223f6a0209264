"""A WAV file that is valid at every moment while audio is appended to it (or a WAV stream to a pipe).

No upstream counterpart (upstream writes whole clips with `audio_write`). For `generate --stream`:
each chunk's samples are written first and the header's sizes updated after, so a player that
opens the file at any moment finds a well-formed WAV of the audio so far. Not atomic on purpose
(the file is meant to be read while it grows); an existing file is still never replaced unless
`overwrite`. On a pipe (`-o -`, not seekable) the header declares the largest size, as streaming
WAV writers do (ffmpeg, sox and players read until the stream ends).
Samples are 16-bit PCM, clipped to [-1, 1] (a stream cannot be normalised ahead of its end).
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import torch

_HEADER = 44
_UNKNOWN = 0xFFFFFFFF  # "until the stream ends", for pipes


def _header(sample_rate: int, channels: int, data_bytes: int) -> bytes:
    riff = min(_UNKNOWN, data_bytes + _HEADER - 8)
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels,
            sample_rate, sample_rate * channels * 2, channels * 2, 16) + b"data" + struct.pack("<I", data_bytes))


class WavStreamWriter:
    """Append [C, samples] float audio to a 16-bit WAV at `target` (a path, or a binary stream such as stdout).

    Args:
        target: the file to create, or an open binary stream (left open by `close`).
        sample_rate, channels: the audio's.
        overwrite: replace an existing file.
    """

    def __init__(self, target: str | Path | BinaryIO, sample_rate: int, channels: int, overwrite: bool = False):
        self.sample_rate, self.channels, self.data_bytes = sample_rate, channels, 0
        if isinstance(target, (str, Path)):
            path = Path(target)
            if path.exists() and not overwrite:
                raise FileExistsError(f"{path} exists; pass --overwrite to replace it or choose another -o")
            self.file, self.owned, self.seekable = open(path, "wb"), True, True
        else:
            self.file, self.owned = target, False
            self.seekable = target.seekable() if hasattr(target, "seekable") else False
        self.file.write(_header(sample_rate, channels, 0 if self.seekable else _UNKNOWN))
        self.file.flush()

    def write(self, audio: torch.Tensor) -> None:
        """Append `audio` [C, samples] (float, nominally in [-1, 1])."""
        if audio.dim() != 2 or audio.shape[0] != self.channels:
            raise ValueError(f"expected audio [{self.channels}, samples], got {tuple(audio.shape)}")
        pcm = (audio.detach().float().clamp(-1, 1) * 32767).round().to(torch.int16).T.contiguous()  # interleaved
        data = pcm.numpy().tobytes()
        self.file.write(data)
        self.data_bytes += len(data)
        if self.seekable:  # samples first, then the sizes that cover them: valid at every moment
            self.file.flush()
            self.file.seek(0)
            self.file.write(_header(self.sample_rate, self.channels, self.data_bytes))
            self.file.seek(0, 2)
        self.file.flush()

    def close(self) -> None:
        if self.owned:
            self.file.close()
        else:
            self.file.flush()

    def __enter__(self) -> "WavStreamWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
