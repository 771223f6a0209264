"""Tests for audiocraft_patched.data.audio and .audio_utils (WAV IO, resampling, normalization).

Parity tests (`upstream` marker) compare with audiocraft 1.3.0's `audio_utils` and with julius
0.2.8, which upstream resamples with. Upstream measures loudness with torchaudio, which cannot be
installed beside our torch: the loudness values pinned below were computed once with
`torchaudio.functional.loudness` from torchaudio 2.11.0 (its pure-Python `lfilter`), on the
signals that `_tones` builds here.
"""
import math
import struct
import types
import wave

import pytest
import torch

from audiocraft_patched.data.audio import AudioFileInfo, audio_info, audio_read, audio_write
from audiocraft_patched.data.audio_utils import (convert_audio, convert_audio_channels, f32_pcm, i16_pcm,
                                                 loudness, normalize_audio, resample_frac)

# (sample_rate, seconds, channels) -> torchaudio 2.11.0 loudness of _tones(...), in LUFS.
TORCHAUDIO_LOUDNESS = {
    (32000, 3.0, 2): -7.823715686798096,
    (16000, 1.5, 5): -6.795331954956055,
    (44100, 2.0, 1): -9.075109481811523,
}


def _tones(sample_rate: int, seconds: float, channels: int) -> torch.Tensor:
    """A few sines per channel, the last third 34 dB quieter (so the relative gate drops it)."""
    t = torch.arange(int(sample_rate * seconds), dtype=torch.float64) / sample_rate

    def tone(freq, amp, phase=0.0):
        return amp * torch.sin(2 * math.pi * freq * t + phase)

    chans = [tone(440, 0.5) + tone(3000, 0.2, 1.0), tone(100, 0.3, 0.5) + tone(9000, 0.05),
             tone(55, 0.1), tone(1200, 0.2), tone(6000, 0.15)]
    quiet_tail = torch.where(t < seconds * 2 / 3, 1.0, 0.02)
    return (torch.stack(chans[:channels]) * quiet_tail).float()


def _sine(freq: float, amp: float, sample_rate: int = 48000, seconds: float = 2.0) -> torch.Tensor:
    t = torch.arange(int(sample_rate * seconds)) / sample_rate
    return (amp * torch.sin(2 * math.pi * freq * t))[None]  # [1, T]


def _noise(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------- WAV IO

@pytest.mark.parametrize("encoding,step", [("pcm_s16le", 2**-15), ("pcm_s24le", 2**-23), ("pcm_f32le", 0.0)])
@pytest.mark.parametrize("channels", [1, 2])
def test_round_trip(tmp_path, channels, encoding, step):
    wav = 0.3 * _noise(channels, 1000)
    path = audio_write(tmp_path / "a", wav, 16000, wav_encoding=encoding)
    assert path == tmp_path / "a.wav"
    expected = normalize_audio(wav)  # 'peak': largest sample at -1 dBFS
    assert expected.abs().max().item() == pytest.approx(10 ** (-1 / 20))
    back, sr = audio_read(path)
    assert sr == 16000 and back.dtype == torch.float32 and back.shape == (channels, 1000)
    torch.testing.assert_close(back, expected, atol=step / 2 + 1e-9, rtol=0)
    assert audio_info(path) == AudioFileInfo(16000, 1000 / 16000, channels)


def test_mono_1d_and_pcm16_samples(tmp_path):
    """A [T] wav is mono; 16-bit samples are round-half-even(x * 2**15), as ffmpeg wrote them."""
    wav = torch.tensor([0.0, 0.5, -0.5, 0.25, 1.5 / 2**15, 2.5 / 2**15, -0.75])
    path = audio_write(tmp_path / "m", wav, 8000, strategy="none")
    with wave.open(str(path)) as f:  # the stdlib reads it back: the header is well formed
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()) == (1, 2, 8000, 7)
        ints = struct.unpack("<7h", f.readframes(7))
    assert ints == (0, 16384, -16384, 8192, 2, 2, -24576)


@pytest.mark.parametrize("encoding", ["pcm_s16le", "pcm_s24le", "pcm_f32le"])
def test_soundfile_reads_what_we_write(tmp_path, encoding):
    soundfile = pytest.importorskip("soundfile")
    wav = 0.5 * _noise(2, 300, seed=1)
    path = audio_write(tmp_path / "s", wav, 22050, wav_encoding=encoding)
    data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    ours, _ = audio_read(path)
    assert sr == 22050
    torch.testing.assert_close(torch.from_numpy(data.T.copy()), ours, atol=1e-7, rtol=0)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_U8"), ("WAV", "PCM_16"), ("WAVEX", "PCM_24"),
                                         ("WAV", "PCM_32"), ("WAV", "FLOAT"), ("WAVEX", "DOUBLE")])
def test_read_what_soundfile_writes(tmp_path, fmt, subtype):
    """Other writers' WAVs, WAVE_FORMAT_EXTENSIBLE (as ffmpeg writes 24-bit) included."""
    soundfile = pytest.importorskip("soundfile")
    data = (0.5 * _noise(300, 3, seed=5)).clamp(-1, 1).numpy()
    path = tmp_path / "w.wav"
    soundfile.write(str(path), data, 44100, format=fmt, subtype=subtype)
    expected, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    ours, sr = audio_read(path, seek_time=100 / 44100)
    assert sr == 44100 and ours.shape == (3, 200)
    torch.testing.assert_close(ours, torch.from_numpy(expected[100:].T.copy()), atol=1e-7, rtol=0)


def test_read_seek_duration_pad(tmp_path):
    wav = torch.linspace(-0.5, 0.5, 1000)[None].repeat(2, 1)
    path = audio_write(tmp_path / "r", wav, 1000, strategy="none", wav_encoding="pcm_f32le")
    part, sr = audio_read(path, seek_time=0.25, duration=0.5)
    assert sr == 1000 and torch.equal(part, wav[:, 250:750])
    tail, _ = audio_read(path, seek_time=0.9, duration=0.5, pad=True)
    assert tail.shape == (2, 500) and torch.equal(tail[:, :100], wav[:, 900:]) and not tail[:, 100:].any()
    past, _ = audio_read(path, seek_time=2.0)
    assert past.shape == (2, 0)


def test_suffix_and_parent_dir(tmp_path):
    path = audio_write(tmp_path / "new" / "dir" / "x.raw", _noise(1, 100), 8000, add_suffix=False)
    assert path == tmp_path / "new" / "dir" / "x.raw" and path.exists()
    with pytest.raises(FileNotFoundError):
        audio_write(tmp_path / "missing" / "y", _noise(1, 100), 8000, make_parent_dir=False)


def test_never_overwrites(tmp_path):
    first = audio_write(tmp_path / "o", 0.1 * _noise(1, 100), 8000)
    content = first.read_bytes()
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        audio_write(tmp_path / "o", 0.1 * _noise(1, 200, seed=3), 8000)
    assert first.read_bytes() == content  # untouched
    second = audio_write(tmp_path / "o", 0.1 * _noise(1, 200, seed=3), 8000, overwrite=True)
    assert second == first and audio_info(second).duration == 200 / 8000


@pytest.mark.parametrize("kwargs,match", [
    (dict(wav=torch.zeros(1, 2, 100)), r"\[C, T\] or \[T\]"),
    (dict(strategy="loud"), "unknown strategy 'loud'"),
    (dict(format="mp3"), "WAV only"),
    (dict(wav_encoding="pcm_u8"), "unknown wav_encoding"),
    (dict(wav=torch.zeros(1, 100, dtype=torch.int16)), "floating point"),
    (dict(wav=torch.tensor([[0.1, float("nan")]])), "NaN"),
    (dict(wav=torch.full((1, 100), 1.5), strategy="none"), "would clip"),
    (dict(strategy="loudness"), "at least 400 ms"),
])
def test_bad_input_messages(tmp_path, kwargs, match):
    args = dict(stem_name=tmp_path / "bad", wav=0.1 * _noise(1, 100), sample_rate=8000)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        audio_write(**args)
    assert not list(tmp_path.iterdir())  # nothing written


def test_read_rejects_non_wav(tmp_path):
    path = tmp_path / "x.mp3"
    path.write_bytes(b"ID3\x03" + bytes(100))
    with pytest.raises(ValueError, match="not a WAV file"):
        audio_read(path)


# --------------------------------------------------------------------------------- normalization

@pytest.mark.upstream
@pytest.mark.parametrize("strategy,normalize,amp", [
    (strategy, normalize, amp)
    for strategy, normalize in [("peak", True), ("peak", False), ("clip", True), ("rms", True), ("rms", False)]
    for amp in (0.05, 3.0)  # quiet, and loud enough to clip
] + [("none", True, 0.05)])  # 'none' refuses audio that clips: see test_bad_input_messages
def test_normalize_matches_upstream(strategy, normalize, amp):
    from audiocraft.data.audio_utils import normalize_audio as upstream_normalize
    wav = amp * _noise(2, 4000, seed=2)
    ours = normalize_audio(wav, normalize, strategy)
    theirs = upstream_normalize(wav.clone(), normalize, strategy)  # upstream may clamp in place
    assert torch.equal(ours, theirs)


@pytest.mark.upstream
@pytest.mark.parametrize("compressor", [False, True])
def test_loudness_strategy_matches_upstream(monkeypatch, compressor):
    """Upstream's loudness glue (gain, tanh, clip) around our meter in place of torchaudio's."""
    import audiocraft.data.audio_utils as upstream_utils

    class Loudness:
        def __init__(self, sample_rate):
            self.sample_rate = sample_rate

        def __call__(self, wav):
            return loudness(wav, self.sample_rate)

    fake = types.SimpleNamespace(transforms=types.SimpleNamespace(Loudness=Loudness))
    monkeypatch.setattr(upstream_utils, "torchaudio", fake)
    wav = _tones(32000, 3.0, 2)
    kwargs = dict(strategy="loudness", loudness_headroom_db=10, loudness_compressor=compressor,
                  sample_rate=32000)
    assert torch.equal(normalize_audio(wav, **kwargs), upstream_utils.normalize_audio(wav.clone(), **kwargs))


def test_loudness_reference_values():
    # BS.1770 defines a 1 kHz sine at -20 dBFS as -23.01 LUFS; torchaudio's K-weighting gives
    # -23.045, and clamps a full-scale one (its shelf output exceeds 1) to -3.276 instead of -3.01.
    assert loudness(_sine(1000, 0.1), 48000).item() == pytest.approx(-23.01, abs=0.05)
    assert loudness(_sine(1000, 0.1), 48000).item() == pytest.approx(-23.04507, abs=1e-3)
    assert loudness(_sine(1000, 1.0), 48000).item() == pytest.approx(-3.27633, abs=1e-3)
    for (sr, seconds, channels), lufs in TORCHAUDIO_LOUDNESS.items():
        assert loudness(_tones(sr, seconds, channels), sr).item() == pytest.approx(lufs, abs=1e-3)
    assert loudness(torch.zeros(2, 16000), 16000).item() == -math.inf
    assert loudness(_tones(16000, 1.0, 2).expand(3, 2, -1), 16000).shape == (3,)  # batch dims


def test_write_loudness_strategy(tmp_path):
    wav = _tones(16000, 1.5, 2)
    path = audio_write(tmp_path / "l", wav, 16000, strategy="loudness", loudness_headroom_db=20)
    back, sr = audio_read(path)
    assert loudness(back, sr).item() == pytest.approx(-20, abs=0.01)


def test_silence_stays_silent(tmp_path):
    for strategy in ("peak", "rms", "loudness"):
        assert not normalize_audio(torch.zeros(1, 8000), strategy=strategy, sample_rate=8000).any()


# ------------------------------------------------------------------------ resampling, channels, PCM

@pytest.mark.upstream
@pytest.mark.parametrize("from_rate,to_rate", [(16000, 32000), (44100, 32000), (32000, 16000)])
def test_resample_matches_julius(from_rate, to_rate):
    julius = pytest.importorskip("julius")
    wav = _noise(2, 2, from_rate // 10 + 3, seed=4)  # [B, C, T], odd length
    expected = julius.resample_frac(wav, from_rate, to_rate)
    ours = resample_frac(wav, from_rate, to_rate)
    assert ours.shape == expected.shape == (2, 2, int(wav.shape[-1] * to_rate / from_rate))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(convert_audio(wav, from_rate, to_rate, 1), expected.mean(dim=-2, keepdim=True),
                               atol=1e-5, rtol=0)


def test_resample_basics():
    wav = _noise(1, 1000)
    assert resample_frac(wav, 32000, 32000) is wav
    assert resample_frac(torch.full((1, 999), 0.25), 48000, 32000).sub(0.25).abs().max() < 1e-6  # DC kept
    with pytest.raises(ValueError, match="positive integers"):
        resample_frac(wav, 0, 16000)


@pytest.mark.upstream
def test_channels_match_upstream():
    from audiocraft.data.audio_utils import convert_audio_channels as upstream_channels
    wav = _noise(2, 3, 50)
    for src, dst in [(3, 1), (1, 2), (3, 2), (2, 2)]:
        assert torch.equal(convert_audio_channels(wav[:, :src], dst), upstream_channels(wav[:, :src], dst))


def test_channel_conversions():
    stereo = _noise(2, 50)
    torch.testing.assert_close(convert_audio_channels(stereo, 1), stereo.mean(0, keepdim=True))
    assert torch.equal(convert_audio_channels(stereo[:1], 3), stereo[:1].repeat(3, 1))
    assert torch.equal(convert_audio_channels(_noise(4, 50), 2), _noise(4, 50)[:2])
    with pytest.raises(ValueError, match="only mono can be upmixed"):
        convert_audio_channels(stereo, 3)
    with pytest.raises(ValueError, match=r"\[\.\.\., C, T\]"):
        convert_audio_channels(stereo[0], 1)


@pytest.mark.upstream
def test_pcm_conversions_match_upstream():
    from audiocraft.data.audio_utils import f32_pcm as upstream_f32, i16_pcm as upstream_i16
    ints = torch.tensor([-32768, -1, 0, 1, 32767], dtype=torch.int16)
    assert torch.equal(f32_pcm(ints), upstream_f32(ints))
    assert torch.equal(f32_pcm(ints.int() << 16), upstream_f32(ints.int() << 16))
    for floats in (torch.tensor([-1.0, -0.5, 0.0, 0.3, 0.99]), torch.tensor([-1.0, 0.5, 1.0])):
        assert torch.equal(i16_pcm(floats), upstream_i16(floats))
    with pytest.raises(ValueError, match="within \\[-1, 1\\]"):
        i16_pcm(torch.tensor([1.5]))
