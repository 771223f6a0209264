"""The music world: short procedural clips whose every attribute is known and controllable.

Not a mirror of any upstream file (audiocraft trains on real music); this is our own toy
world, small enough that a MusicGen trained on CPU in under an hour learns to follow its text.
A clip is a melody (one note per beat) played by one of three instruments that differ only in
their harmonics, in one of three registers, over a hi-hat track whose hits per beat set the
rhythm density, mixed to one of two loudness levels. Every attribute leaves a trace that an
analyzer (`world/analyze.py`) can read back from the audio, so adherence can be scored.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SAMPLE_RATE = 16000
CLIP_SECONDS = 5.0

# Attribute values; the analyzers and the captions use the same names.
INSTRUMENTS = ("flute", "clarinet", "trumpet")
REGISTERS = ("low", "mid", "high")
TEMPOS = ("slow", "fast")
DENSITIES = ("sparse", "dense")
LOUDNESSES = ("quiet", "loud")
ATTRIBUTES: dict[str, tuple[str, ...]] = {"instrument": INSTRUMENTS, "register": REGISTERS, "tempo": TEMPOS,
                                          "density": DENSITIES, "loudness": LOUDNESSES}

BPM = {"slow": 75.0, "fast": 150.0}
HATS_PER_BEAT = {"sparse": 1, "dense": 4}
RMS_DBFS = {"quiet": -30.0, "loud": -14.0}
# Steps of a major pentatonic scale from each register's root (A2, A3, A4): registers never overlap.
_PENTATONIC = (0, 2, 4, 7, 9)
REGISTER_ROOT = {"low": 45, "mid": 57, "high": 69}
MAX_HARMONIC_HZ = 4000.0  # melodies stay below the hi-hat band (> 5 kHz) so the two never mix
HAT_LOW_HZ = 5000.0


@dataclass(frozen=True)
class Attributes:
    """What a clip is made of (one value of each attribute)."""

    instrument: str
    register: str
    tempo: str
    density: str
    loudness: str

    def __post_init__(self):
        for name, values in ATTRIBUTES.items():
            if getattr(self, name) not in values:
                raise ValueError(f"{name} must be one of {values}, got {getattr(self, name)!r}")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def all_attributes() -> list[Attributes]:
    """Every combination of attribute values (72), in a fixed order."""
    combos = [[]]
    for values in ATTRIBUTES.values():
        combos = [c + [v] for c in combos for v in values]
    return [Attributes(*c) for c in combos]


def random_attributes(rng: np.random.Generator) -> Attributes:
    return Attributes(*(values[rng.integers(len(values))] for values in ATTRIBUTES.values()))


def harmonic_amplitudes(instrument: str, n: int) -> np.ndarray:
    """Amplitudes of harmonics 1..n: sine-like flute, odd-only clarinet, sawtooth trumpet."""
    k = np.arange(1, n + 1)
    if instrument == "flute":
        return np.where(k == 1, 1.0, 0.0)
    if instrument == "clarinet":
        return np.where(k % 2 == 1, 1.0 / k, 0.0)
    if instrument == "trumpet":
        return 1.0 / k
    raise ValueError(f"unknown instrument {instrument!r}; known: {INSTRUMENTS}")


def midi_to_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def _note(f0: float, instrument: str, length: int, sr: int) -> np.ndarray:
    """One note of `length` samples: harmonics below MAX_HARMONIC_HZ, a fast attack, a decay.

    Harmonics start in sine phase, as a synthesizer's oscillators do: the waveform then follows
    from pitch, instrument and onset, which a 1.6 kbit/s codec can carry (random phases could not).
    """
    t = np.arange(length) / sr
    n = max(1, int(MAX_HARMONIC_HZ // f0))
    amps = harmonic_amplitudes(instrument, n)
    k = np.arange(1, n + 1)[:, None]
    tone = (amps[:, None] * np.sin(2 * np.pi * f0 * k * t[None])).sum(0)
    attack = np.minimum(1.0, t / 0.01)
    release = np.minimum(1.0, (length / sr - t) / 0.03).clip(0)
    return tone * attack * np.exp(-t / 0.5) * release


def hat_sample(sr: int = SAMPLE_RATE) -> np.ndarray:
    """The hi-hat sample: 40 ms of decaying noise above HAT_LOW_HZ, the same for every hit.

    Like a drum machine's sample, it never changes, so a codec can learn its exact waveform
    (fresh noise at every hit would only be reproducible in its spectrum).
    """
    n = int(0.04 * sr)
    burst = np.random.default_rng(12345).standard_normal(n) * np.exp(-np.arange(n) / (0.008 * sr))
    spectrum = np.fft.rfft(burst, 4 * n)
    spectrum[np.fft.rfftfreq(4 * n, 1 / sr) < HAT_LOW_HZ] = 0
    return np.fft.irfft(spectrum, 4 * n)[:n] * np.hanning(2 * n)[n:]


def _hats(onsets: list[int], length: int, sr: int) -> np.ndarray:
    """The hi-hat sample at every onset."""
    track = np.zeros(length)
    sample = hat_sample(sr)
    for start in onsets:
        stop = min(length, start + len(sample))
        track[start:stop] += sample[:stop - start]
    return track


def render(attrs: Attributes, seed: int, seconds: float = CLIP_SECONDS, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Render one clip.

    Args:
        attrs: the clip's attribute values.
        seed: everything random (the melody and where the first beat falls) comes from it.
        seconds: clip length.
        sr: sample rate.
    Returns:
        [seconds * sr] float32 mono waveform with RMS level RMS_DBFS[attrs.loudness].
    """
    rng = np.random.default_rng(seed)
    length = int(round(seconds * sr))
    beat = 60.0 / BPM[attrs.tempo]
    start = rng.uniform(0, beat)  # the first note may fall anywhere within the first beat
    melody = np.zeros(length)
    degree = int(rng.integers(len(_PENTATONIC)))
    t0 = start - beat
    while t0 < seconds:
        # A random walk on the scale that never repeats a note, so every beat is a new onset.
        degree = (degree + int(rng.choice([-2, -1, 1, 2]))) % len(_PENTATONIC)
        f0 = midi_to_hz(REGISTER_ROOT[attrs.register] + _PENTATONIC[degree])
        a, b = int(round(t0 * sr)), int(round((t0 + 0.92 * beat) * sr))
        note = _note(f0, attrs.instrument, b - a, sr)
        lo, hi = max(a, 0), min(b, length)
        if hi > lo:
            melody[lo:hi] += note[lo - a:hi - a]
        t0 += beat
    step = beat / HATS_PER_BEAT[attrs.density]
    onsets = [int(round(t * sr)) for t in np.arange(start % step, seconds, step)]
    hats = _hats(onsets, length, sr)
    melody /= np.sqrt(np.mean(melody ** 2)) + 1e-9
    hats /= np.sqrt(np.mean(hats ** 2)) + 1e-9
    # Same energy per hit whatever the density: total hat energy grows with the number of hits.
    mix = melody + 0.5 * hats * np.sqrt(HATS_PER_BEAT[attrs.density] / HATS_PER_BEAT["dense"])
    mix *= 10 ** (RMS_DBFS[attrs.loudness] / 20) / (np.sqrt(np.mean(mix ** 2)) + 1e-9)
    return mix.astype(np.float32)


def render_batch(attrs: list[Attributes], seeds: list[int], seconds: float = CLIP_SECONDS) -> np.ndarray:
    """[len(attrs), seconds * SAMPLE_RATE] clips."""
    return np.stack([render(a, s, seconds) for a, s in zip(attrs, seeds)])
