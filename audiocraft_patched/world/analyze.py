"""Analyzers that read a world clip's attributes back from its audio, and adherence scores.

Our own code (no upstream counterpart). Each analyzer measures one physical trace that
`world/synth.py` leaves, with thresholds halfway (in log terms) between the rendered values:
- register: the median fundamental of the melody frames (harmonic summation);
- instrument: the strength of even and odd harmonics relative to the fundamental;
- tempo: how strongly the melody's onset envelope repeats at the fast beat vs the slow one;
- density: hi-hat hits (onsets above HAT_LOW_HZ) per beat;
- loudness: RMS level in dBFS.
"""
from __future__ import annotations

import numpy as np

from .synth import (ATTRIBUTES, BPM, HAT_LOW_HZ, MAX_HARMONIC_HZ, REGISTER_ROOT, RMS_DBFS, SAMPLE_RATE, Attributes,
                    midi_to_hz)

HOP = 160  # 10 ms frames
N_FFT = 2048  # 128 ms windows: ~8 Hz bins resolve the harmonics of the lowest notes
_F0_GRID = np.geomspace(70.0, 1000.0, 240)
_N_HARMONICS = 5
# Register boundaries: geometric midpoints between one register's top note (root + 9) and the next root.
_LOW_MID_HZ = float(np.sqrt(midi_to_hz(REGISTER_ROOT["low"] + 9) * midi_to_hz(REGISTER_ROOT["mid"])))
_MID_HIGH_HZ = float(np.sqrt(midi_to_hz(REGISTER_ROOT["mid"] + 9) * midi_to_hz(REGISTER_ROOT["high"])))


def stft_power(wav: np.ndarray, n_fft: int = N_FFT) -> np.ndarray:
    """[S] waveform -> [frames, n_fft // 2 + 1] power spectrogram (Hann window, 10 ms hop)."""
    pad = np.pad(wav.astype(np.float64), (n_fft // 2, n_fft // 2))
    n_frames = 1 + (len(pad) - n_fft) // HOP
    idx = np.arange(n_fft)[None] + HOP * np.arange(n_frames)[:, None]
    return np.abs(np.fft.rfft(pad[idx] * np.hanning(n_fft), axis=-1)) ** 2


def _band_db(power: np.ndarray, lo: float, hi: float, n_fft: int) -> np.ndarray:
    freqs = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
    band = (freqs >= lo) & (freqs < hi)
    return 10 * np.log10(power[:, band].sum(-1) + 1e-12)


def _onset_strength(db: np.ndarray) -> np.ndarray:
    """Rises of a level envelope (dB per frame), ignoring frames 50 dB below its peak."""
    db = np.maximum(db, db.max() - 50)
    return np.maximum(np.diff(db, prepend=db[:1]), 0)


def frame_pitch(power: np.ndarray) -> np.ndarray:
    """Per-frame fundamental [frames] in Hz by weighted harmonic summation of magnitudes.

    Weights 1/k make the true fundamental beat its sub-octave (which would collect the same
    harmonics at even k only).
    """
    mag = np.sqrt(power)
    bins = np.rint(_F0_GRID[:, None] * np.arange(1, _N_HARMONICS + 1)[None] * N_FFT / SAMPLE_RATE).astype(int)
    bins = np.minimum(bins, mag.shape[1] - 1)
    weights = 1.0 / np.arange(1, _N_HARMONICS + 1)
    # The local max over +-1 bin tolerates the grid not hitting a harmonic's bin exactly.
    local = np.maximum(np.maximum(mag, np.roll(mag, 1, -1)), np.roll(mag, -1, -1))
    scores = (local[:, bins] * weights).sum(-1)  # [frames, candidates]
    return _F0_GRID[scores.argmax(-1)]


def _melody_frames(power: np.ndarray) -> np.ndarray:
    db = _band_db(power, 60, MAX_HARMONIC_HZ + 200, N_FFT)
    return db > db.max() - 15


def harmonic_profile(power: np.ndarray, f0: np.ndarray, voiced: np.ndarray) -> tuple[float, float]:
    """Median over voiced frames of (even, odd) harmonic amplitude relative to the fundamental.

    even = mean(A2, A4) / A1 and odd = mean(A3, A5) / A1, amplitudes read at k * f0.
    """
    mag = np.sqrt(power[voiced])
    f0 = f0[voiced]
    if len(f0) == 0:
        return 0.0, 0.0
    k = np.arange(1, 6)
    bins = np.rint(f0[:, None] * k[None] * N_FFT / SAMPLE_RATE).astype(int)
    bins = np.minimum(bins, mag.shape[1] - 2)
    rows = np.arange(len(f0))[:, None]
    amp = np.maximum(np.maximum(mag[rows, bins], mag[rows, bins - 1]), mag[rows, bins + 1])  # [frames, 5]
    a1 = amp[:, 0] + 1e-9
    even = (amp[:, 1] + amp[:, 3]) / 2 / a1
    odd = (amp[:, 2] + amp[:, 4]) / 2 / a1
    return float(np.median(even)), float(np.median(odd))


def _acf_peak(x: np.ndarray, seconds: float, tolerance: float = 0.1) -> float:
    """Largest normalised autocorrelation of `x` within +-tolerance of a lag of `seconds`."""
    x = x - x.mean()
    full = np.correlate(x, x, mode="full")[len(x) - 1:]
    full = full / (full[0] + 1e-12)
    fps = SAMPLE_RATE / HOP
    lo, hi = int(seconds * (1 - tolerance) * fps), int(np.ceil(seconds * (1 + tolerance) * fps))
    return float(full[lo:hi + 1].max()) if lo < len(full) else 0.0


def count_peaks(strength: np.ndarray, threshold: float, min_gap: int = 5) -> int:
    """Local maxima of `strength` above `threshold`, at least `min_gap` frames apart."""
    count, last = 0, -min_gap
    for i in range(1, len(strength) - 1):
        if strength[i] >= threshold and strength[i] >= strength[i - 1] and strength[i] > strength[i + 1]:
            if i - last >= min_gap:
                count, last = count + 1, i
    return count


def features(wav: np.ndarray) -> dict[str, float]:
    """The measurements the classifiers use, for one [S] mono clip at SAMPLE_RATE."""
    wav = np.asarray(wav, dtype=np.float64).reshape(-1)
    power = stft_power(wav)
    voiced = _melody_frames(power)
    f0 = frame_pitch(power)
    even, odd = harmonic_profile(power, f0, voiced)
    small = stft_power(wav, 256)  # short windows for sharp onsets
    melody_onsets = _onset_strength(_band_db(small, 60, MAX_HARMONIC_HZ + 200, 256))
    hat_db = _band_db(small, HAT_LOW_HZ, SAMPLE_RATE / 2, 256)
    hats = count_peaks(_onset_strength(hat_db), threshold=6.0)
    seconds = len(wav) / SAMPLE_RATE
    return {
        "f0_hz": float(np.median(f0[voiced])) if voiced.any() else 0.0,
        "even": even, "odd": odd,
        "acf_fast": _acf_peak(melody_onsets, 60 / BPM["fast"]),
        "acf_slow": _acf_peak(melody_onsets, 60 / BPM["slow"]),
        "hats_per_s": hats / seconds,
        "rms_db": float(10 * np.log10(np.mean(wav ** 2) + 1e-12)),
    }


def classify(feats: dict[str, float]) -> dict[str, str]:
    """Attribute values from `features`."""
    f0 = feats["f0_hz"]
    register = "low" if f0 < _LOW_MID_HZ else "mid" if f0 < _MID_HIGH_HZ else "high"
    if feats["even"] > 0.15:
        instrument = "trumpet"
    elif feats["odd"] > 0.12:
        instrument = "clarinet"
    else:
        instrument = "flute"
    # A slow melody has no onset half a slow beat after each onset; a fast one has.
    tempo = "fast" if feats["acf_fast"] > 0.6 * max(feats["acf_slow"], 1e-6) else "slow"
    hats_per_beat = feats["hats_per_s"] / (BPM[tempo] / 60)
    density = "dense" if hats_per_beat > 2.0 else "sparse"
    loudness = "loud" if feats["rms_db"] > (RMS_DBFS["quiet"] + RMS_DBFS["loud"]) / 2 else "quiet"
    return {"instrument": instrument, "register": register, "tempo": tempo, "density": density,
            "loudness": loudness}


def analyze(wav: np.ndarray) -> dict[str, str]:
    """Read all attributes of one [S] mono clip at SAMPLE_RATE."""
    return classify(features(wav))


def score(wav: np.ndarray, target: Attributes | dict[str, str]) -> dict[str, bool]:
    """Which attributes of `wav` match `target` (e.g. the attributes its caption asks for)."""
    target = target.as_dict() if isinstance(target, Attributes) else target
    found = analyze(wav)
    return {name: found[name] == value for name, value in target.items()}


def adherence(wavs: np.ndarray | list[np.ndarray], targets: list[Attributes]) -> dict[str, float]:
    """Fraction of clips matching their target, per attribute, and 'mean' over attributes.

    Args:
        wavs: [N, S] clips (or a list of [S]).
        targets: N attribute sets.
    """
    if len(wavs) != len(targets):
        raise ValueError(f"got {len(wavs)} clips for {len(targets)} targets")
    hits = {name: 0 for name in ATTRIBUTES}
    for wav, target in zip(wavs, targets):
        for name, ok in score(wav, target).items():
            hits[name] += ok
    out = {name: count / max(len(targets), 1) for name, count in hits.items()}
    out["mean"] = float(np.mean([out[name] for name in ATTRIBUTES]))
    return out


def chance_adherence() -> float:
    """Expected 'mean' adherence of clips whose attributes are uniformly random."""
    return float(np.mean([1 / len(values) for values in ATTRIBUTES.values()]))
