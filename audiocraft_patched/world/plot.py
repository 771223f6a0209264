"""Spectrogram pictures written as PNG with the standard library (zlib + struct), no plotting package.

Our own code (no upstream counterpart). Rows of log-magnitude spectrograms, one per clip, low
frequencies at the bottom, separated by white lines; titles go in the caller's text (a PNG
without a font renderer carries none).
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from .analyze import stft_power


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an [H, W, 3] uint8 image as an 8-bit RGB PNG."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 image, got {rgb.shape} {rgb.dtype}")
    h, w, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))  # filter type 0 on every row
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    path = Path(path)
    path.write_bytes(png)
    return path


def colormap(x: np.ndarray) -> np.ndarray:
    """[...] values in [0, 1] -> [..., 3] uint8 (black -> purple -> orange -> yellow)."""
    stops = np.array([[0, 0, 0], [80, 18, 123], [229, 92, 48], [252, 253, 191]], dtype=np.float64)
    pos = np.clip(x, 0, 1) * (len(stops) - 1)
    lo = np.minimum(pos.astype(int), len(stops) - 2)
    frac = (pos - lo)[..., None]
    return (stops[lo] * (1 - frac) + stops[lo + 1] * frac).astype(np.uint8)


def spectrogram_image(wav: np.ndarray, height: int = 128, n_fft: int = 512, floor_db: float = 80.0) -> np.ndarray:
    """[height, frames, 3] picture of one clip's log-power spectrogram (10 ms per column)."""
    power = stft_power(np.asarray(wav, dtype=np.float64).reshape(-1), n_fft)  # [frames, bins]
    db = 10 * np.log10(power + 1e-10)
    db = (db - (db.max() - floor_db)) / floor_db
    bins = np.linspace(0, db.shape[1] - 1, height).astype(int)
    return colormap(db[:, bins].T[::-1])  # low frequencies at the bottom


def spectrogram_png(path: str | Path, wavs: list[np.ndarray], height: int = 128) -> Path:
    """Stack the spectrograms of `wavs` (top to bottom) into one PNG at `path`."""
    rows = [spectrogram_image(w, height) for w in wavs]
    width = max(r.shape[1] for r in rows)
    sep = np.full((3, width, 3), 255, np.uint8)
    parts = []
    for r in rows:
        parts += [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))), sep]
    return write_png(path, np.concatenate(parts[:-1]))
