"""Audio file IO: `audio_write`, `audio_read`, `audio_info`, for WAV files.

Mirrors `audiocraft/data/audio.py` (audiocraft 1.3.0): same signatures, same normalization, same
16-bit samples as upstream's ffmpeg pipe. Upstream goes through ffmpeg, PyAV and soundfile; we
need none of them: WAV is written with the stdlib `wave` module (PCM) or a hand-built header
(IEEE float, which `wave` cannot write), and read with a small RIFF parser + numpy, which also
covers the WAVE_FORMAT_EXTENSIBLE files that ffmpeg writes for 24-bit or > 48 kHz audio.

Differences from upstream, on purpose:

- only WAV: `format='mp3' | 'ogg' | 'flac'` raise a ValueError (convert the WAV with ffmpeg);
- an existing file is never replaced unless `overwrite=True` (upstream always replaced it), and
  the file is written under a temporary name and renamed into place, so an interrupted write
  leaves the old file (or none), never a partial one;
- `audio_read` refuses NaN/infinite samples and warns, naming the file, when the 'data' chunk is
  shorter than its header says (a truncated file);
- `wav_encoding` adds 24-bit PCM and 32-bit float WAV to the 16-bit default;
- silent audio is written as silence with the 'peak' and 'rms' strategies (upstream wrote NaN).
"""
from __future__ import annotations

import os
import struct
import warnings
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .atomic import atomic_write
from .audio_utils import f32_pcm, normalize_audio  # noqa: F401  (f32_pcm re-exported, as upstream)

# ffmpeg codec names, as upstream's pipe used 'pcm_s16le', mapped to bytes per sample.
WAV_ENCODINGS = {"pcm_s16le": 2, "pcm_s24le": 3, "pcm_f32le": 4}

_FORMAT_PCM = 0x0001
_FORMAT_FLOAT = 0x0003
_FORMAT_EXTENSIBLE = 0xFFFE


@dataclass(frozen=True)
class AudioFileInfo:
    """What `audio_info` reads from a file's header."""

    sample_rate: int
    duration: float  # seconds
    channels: int


def _pcm_bytes(wav: torch.Tensor, encoding: str) -> bytes:
    """Interleave [C, T] float audio into little-endian WAV sample bytes."""
    x = wav.detach().to("cpu", torch.float32).t().contiguous()  # [T, C]: frames are interleaved
    if encoding == "pcm_f32le":
        return x.numpy().astype("<f4").tobytes()
    if encoding == "pcm_s16le":
        # ffmpeg's float -> s16 rule (round half to even of x * 2**15, then saturate), so that the
        # samples are the ones upstream wrote.
        return (x * 2**15).round().clamp(-2**15, 2**15 - 1).to(torch.int16).numpy().astype("<i2").tobytes()
    ints = (x.double() * 2**23).round().clamp(-2**23, 2**23 - 1).to(torch.int32).numpy().astype("<i4")
    return ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()  # the low three bytes of each int


def _write_float_wav(file, wav: torch.Tensor, sample_rate: int) -> None:
    """Write IEEE-float WAV: RIFF header, 'fmt ' (tag 3), 'fact' (required for non-PCM), 'data'."""
    channels, frames = wav.shape
    data = _pcm_bytes(wav, "pcm_f32le")
    fmt = struct.pack("<HHIIHHH", _FORMAT_FLOAT, channels, sample_rate, sample_rate * channels * 4,
                      channels * 4, 32, 0)
    fact = struct.pack("<I", frames)
    riff_size = 4 + (8 + len(fmt)) + (8 + len(fact)) + (8 + len(data))
    file.write(b"RIFF" + struct.pack("<I", riff_size) + b"WAVE")
    file.write(b"fmt " + struct.pack("<I", len(fmt)) + fmt)
    file.write(b"fact" + struct.pack("<I", len(fact)) + fact)
    file.write(b"data" + struct.pack("<I", len(data)) + data)
    if len(data) % 2:  # chunks are word aligned
        file.write(b"\0")


def audio_write(stem_name: str | Path,
                wav: torch.Tensor, sample_rate: int,
                format: str = "wav", mp3_rate: int = 320, ogg_rate: int | None = None,
                normalize: bool = True, strategy: str = "peak", peak_clip_headroom_db: float = 1,
                rms_headroom_db: float = 18, loudness_headroom_db: float = 14,
                loudness_compressor: bool = False,
                log_clipping: bool = True, make_parent_dir: bool = True,
                add_suffix: bool = True, overwrite: bool = False,
                wav_encoding: str = "pcm_s16le") -> Path:
    """Normalize `wav` and write it to `stem_name` + '.wav'; return the path written.

    Args:
        stem_name: file name without extension; '.wav' is appended when `add_suffix`.
        wav: audio, [C, T] or [T] (mono), floating point, finite.
        sample_rate: sample rate of `wav`, in Hz.
        format: must be 'wav'; upstream's 'mp3', 'ogg' and 'flac' are not available here.
        mp3_rate: unused, kept for upstream's signature.
        ogg_rate: unused, kept for upstream's signature.
        normalize: scale by `strategy`; if False, 'peak' and 'rms' only scale down audio that
            would clip. See `audio_utils.normalize_audio`.
        strategy: 'peak' (default), 'clip', 'rms', 'loudness' or 'none'.
        peak_clip_headroom_db: headroom for 'peak' and 'clip', in dB.
        rms_headroom_db: headroom for 'rms', in dB.
        loudness_headroom_db: target for 'loudness', in dB below 0 LUFS.
        loudness_compressor: soft-clip with tanh after 'loudness' scaling.
        log_clipping: log a warning when 'rms' or 'loudness' leave samples to clamp.
        make_parent_dir: create the parent folder if missing.
        add_suffix: append '.wav' to `stem_name`.
        overwrite: replace an existing file. By default an existing file raises FileExistsError.
        wav_encoding: 'pcm_s16le' (16-bit, upstream's), 'pcm_s24le' (24-bit) or 'pcm_f32le'
            (32-bit float; still normalized, but values past full scale are kept).

    Returns:
        The path of the written file.
    """
    if format != "wav":
        raise ValueError(f"format={format!r} is not supported: audiocraft_patched writes WAV only "
                         "(format='wav'); convert the result with e.g. ffmpeg if you need mp3/ogg/flac")
    if wav_encoding not in WAV_ENCODINGS:
        raise ValueError(f"unknown wav_encoding {wav_encoding!r}; pick one of {sorted(WAV_ENCODINGS)}")
    if not isinstance(wav, torch.Tensor) or not wav.dtype.is_floating_point:
        raise ValueError(f"wav must be a floating point tensor, got {getattr(wav, 'dtype', type(wav))}; "
                         "convert PCM integers with audio_utils.f32_pcm(wav)")
    if wav.dim() == 1:
        wav = wav[None]
    elif wav.dim() != 2:
        raise ValueError(f"wav must be [C, T] or [T], got shape {tuple(wav.shape)}; "
                         "write batch items one at a time, e.g. audio_write(name, wav[i], sr)")
    if wav.shape[-1] == 0:
        raise ValueError("wav is empty (0 samples)")
    if not wav.isfinite().all():
        raise ValueError("wav contains NaN or infinite values")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate}")
    sample_rate = int(sample_rate)
    wav = normalize_audio(wav, normalize, strategy, peak_clip_headroom_db,
                          rms_headroom_db, loudness_headroom_db, loudness_compressor,
                          log_clipping=log_clipping, sample_rate=sample_rate,
                          stem_name=str(stem_name))

    path = Path(str(stem_name) + (".wav" if add_suffix else ""))
    if make_parent_dir:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist; pass make_parent_dir=True to create it")
    if not overwrite and os.path.lexists(path):  # fail before the work; atomic_write re-checks
        raise _exists_error(path)
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as file:
            if wav_encoding == "pcm_f32le":
                _write_float_wav(file, wav, sample_rate)
            else:
                with wave.open(file, "wb") as out:
                    out.setnchannels(wav.shape[0])
                    out.setsampwidth(WAV_ENCODINGS[wav_encoding])
                    out.setframerate(sample_rate)
                    out.writeframes(_pcm_bytes(wav, wav_encoding))

    try:  # a temporary file renamed into place: readers see the old file or the whole new one
        atomic_write(path, write, overwrite)
    except FileExistsError:  # created meanwhile
        raise _exists_error(path) from None
    return path


def _exists_error(path: Path) -> FileExistsError:
    return FileExistsError(f"{path} already exists and audio_write does not replace files by default; "
                           "pass overwrite=True to replace it, or choose another stem_name")


@dataclass(frozen=True)
class _WavLayout:
    format_tag: int  # _FORMAT_PCM or _FORMAT_FLOAT (extensible files resolved to their subformat)
    channels: int
    sample_rate: int
    sample_bytes: int
    data_offset: int  # byte position of the first sample
    frames: int
    missing_bytes: int = 0  # how much shorter the 'data' chunk is than its header says (truncated file)


def _wav_layout(file, path: Path) -> _WavLayout:
    """Walk the RIFF chunks of an open WAV file up to its 'data' chunk."""
    header = file.read(12)
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise ValueError(f"{path} is not a WAV file (no RIFF/WAVE header); only WAV can be read here")
    fmt = None
    while True:
        chunk = file.read(8)
        if len(chunk) < 8:
            raise ValueError(f"{path}: no 'data' chunk, the file is truncated or not a WAV file")
        name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if name == b"fmt ":
            fmt = file.read(size)
            if size % 2:
                file.seek(1, 1)
        elif name == b"data":
            data_size = size
            break
        else:
            file.seek(size + size % 2, 1)  # chunks are word aligned
    if fmt is None or len(fmt) < 16:
        raise ValueError(f"{path}: missing or short 'fmt ' chunk before 'data'")
    tag, channels, sample_rate, _, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _FORMAT_EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]  # the subformat GUID starts with the format tag
    sample_bytes = block_align // channels if channels else 0
    if not ((tag == _FORMAT_PCM and sample_bytes in (1, 2, 3, 4))
            or (tag == _FORMAT_FLOAT and sample_bytes in (4, 8))):
        raise ValueError(f"{path}: unsupported WAV encoding (format tag {tag:#x}, {bits} bits); "
                         "supported: 8/16/24/32-bit PCM, 32/64-bit float")
    data_offset = file.tell()
    file.seek(0, 2)
    # Trust the file length over the chunk size: streamed writers leave the size field unset.
    available = file.tell() - data_offset
    data_bytes = available if data_size in (0, 0xFFFFFFFF) else min(data_size, available)
    missing = 0 if data_size in (0, 0xFFFFFFFF) else max(0, data_size - available)
    return _WavLayout(tag, channels, sample_rate, sample_bytes, data_offset, data_bytes // block_align, missing)


def audio_info(filepath: str | Path) -> AudioFileInfo:
    """Sample rate, duration and channels of a WAV file, from its header."""
    path = Path(filepath)
    with open(path, "rb") as file:
        layout = _wav_layout(file, path)
    return AudioFileInfo(layout.sample_rate, layout.frames / layout.sample_rate, layout.channels)


def _decode(raw: bytes, layout: _WavLayout) -> np.ndarray:
    """Sample bytes -> float32 in [-1, 1), scaled as upstream's `f32_pcm` scales PCM."""
    width = layout.sample_bytes
    if layout.format_tag == _FORMAT_FLOAT:
        return np.frombuffer(raw, dtype="<f4" if width == 4 else "<f8").astype(np.float32)
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128) / 2**7
    if width == 3:
        # Place the three bytes in the top of an int32 (the sign comes along), as ffmpeg decodes
        # 24-bit, then scale as int32.
        padded = np.zeros((len(raw) // 3, 4), dtype=np.uint8)
        padded[:, 1:] = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        return padded.view("<i4").ravel().astype(np.float32) / 2**31
    ints = np.frombuffer(raw, dtype="<i2" if width == 2 else "<i4")
    return ints.astype(np.float32) / 2 ** (8 * width - 1)


def audio_read(filepath: str | Path, seek_time: float = 0.,
               duration: float = -1., pad: bool = False) -> tuple[torch.Tensor, int]:
    """Read a WAV file, or `duration` seconds of it from `seek_time` on.

    Args:
        filepath: path of a WAV file (PCM 8/16/24/32-bit or float 32/64-bit).
        seek_time: where to start, in seconds.
        duration: how much to read, in seconds; 0 or negative reads to the end.
        pad: zero-pad the end up to `duration` when the file is shorter.

    Returns:
        (wav [C, T] float32 in [-1, 1), sample_rate). Past the end of the file, T is 0 (or the
        padded length).

    Raises:
        ValueError: not a readable WAV, or NaN/infinite samples in the part read. A truncated
            file only warns (naming it) and gives the frames it holds.
    """
    path = Path(filepath)
    if seek_time < 0:
        raise ValueError(f"seek_time must be >= 0 seconds, got {seek_time}")
    with open(path, "rb") as file:
        layout = _wav_layout(file, path)
        if layout.missing_bytes:
            warnings.warn(f"{path} is truncated: its header announces {layout.missing_bytes} more bytes of audio "
                          f"than the file holds; reading the {layout.frames} frames that are there", stacklevel=2)
        sr = layout.sample_rate
        start = min(int(seek_time * sr), layout.frames)
        count = layout.frames - start
        if duration > 0:
            count = min(count, int(duration * sr))
        frame_bytes = layout.channels * layout.sample_bytes
        file.seek(layout.data_offset + start * frame_bytes)
        raw = file.read(count * frame_bytes)
    samples = _decode(raw, layout).reshape(-1, layout.channels)  # [T, C]
    bad = ~np.isfinite(samples)
    if bad.any():  # only float WAVs can hold these; as audio they would turn into garbage codes
        first = int(np.argmax(bad.any(axis=1))) + start
        raise ValueError(f"{path} holds {int(bad.sum())} NaN or infinite samples (the first at frame {first}, "
                         f"{first / sr:.3f} s): it is not usable as audio; fix or re-export the file")
    wav = torch.from_numpy(samples.T.copy())  # [C, T]
    if pad and duration > 0:
        wav = F.pad(wav, (0, int(duration * sr) - wav.shape[-1]))
    return wav, sr
