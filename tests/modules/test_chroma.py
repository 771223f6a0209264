"""Chroma extraction (modules/chroma.py) against librosa's filterbank and upstream's ChromaExtractor."""
import math
import os

import pytest
import torch

from audiocraft_patched.modules.chroma import ChromaExtractor, chroma_filterbank


def _librosa():
    """The real librosa (requirements-upstream.txt); CI must have it."""
    try:
        import librosa.filters
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("librosa is not installed: pip install --no-deps -r requirements-upstream.txt")
        pytest.skip("librosa is not installed")
    return librosa


@pytest.mark.parametrize("sr,n_fft,n_chroma", [(32000, 16384, 12), (32000, 4096, 12), (16000, 2048, 24),
                                              (44100, 1000, 12), (22050, 512, 7)])
def test_filterbank_is_librosas(sr, n_fft, n_chroma):
    librosa = _librosa()
    expected = torch.from_numpy(librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=0, n_chroma=n_chroma))
    got = chroma_filterbank(sr, n_fft, n_chroma=n_chroma)
    assert got.dtype == torch.float32 and got.shape == (n_chroma, 1 + n_fft // 2)
    assert torch.equal(got, expected)


def tone(freq: float, seconds: float, sr: int) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return torch.sin(2 * math.pi * freq * t)


def test_pitch_classes_of_pure_tones():
    extractor = ChromaExtractor(16000, radix2_exp=11, argmax=True)
    # C4, E4, A4: classes 0, 4, 9 (the filterbank starts at C).
    wav = torch.stack([tone(f, 1.0, 16000) for f in (261.63, 329.63, 440.0)])[:, None]
    chroma = extractor(wav)
    assert chroma.shape == (3, 1 + 16000 // 512, 12)
    assert torch.equal(chroma.sum(-1), torch.ones(3, chroma.shape[1]))  # one-hot per frame
    assert chroma[:, 2:-2].argmax(-1).unique(dim=1).flatten().tolist() == [0, 4, 9]


def test_state_dict_keys_match_upstream_layout():
    # torchaudio's Spectrogram saves its window; the filterbank is derived, not saved.
    assert list(ChromaExtractor(32000, radix2_exp=14).state_dict()) == ["spec.window"]


def test_window_longer_than_fft_is_refused():
    with pytest.raises(ValueError, match="longer than the FFT size"):
        ChromaExtractor(16000, winlen=1024, nfft=512)


@pytest.mark.upstream
@pytest.mark.parametrize("kwargs", [dict(radix2_exp=14, argmax=True), dict(radix2_exp=12),
                                    dict(radix2_exp=11, norm=2.0), dict(nfft=1024, winlen=800, winhop=300),
                                    dict(n_chroma=24, radix2_exp=12, argmax=True)],
                         ids=["melody", "default", "l2", "odd_sizes", "24_classes"])
def test_same_as_upstream_extractor(kwargs):
    _librosa()
    from audiocraft.modules.chroma import ChromaExtractor as Upstream

    gen = torch.Generator().manual_seed(0)
    sr = 32000
    melody = sum(tone(f, 1.5, sr) * a for f, a in ((392.0, 1.0), (523.25, 0.5), (98.0, 0.8)))
    waves = {
        "melody": torch.stack([melody, 0.3 * melody.flip(0)])[:, None],  # [B, 1, T]
        "noise": torch.randn(3, 20000, generator=gen),  # [B, T]
        "short": torch.randn(2, 1, 700, generator=gen),  # shorter than the FFT: zero-padded
        "null": torch.zeros(4, 1, 1),  # a null condition
    }
    ours, up = ChromaExtractor(sr, **kwargs), Upstream(sr, **kwargs)
    torch.testing.assert_close(ours.fbanks, up.fbanks, atol=0, rtol=0)
    ours.load_state_dict(up.state_dict())
    for name, wav in waves.items():
        expected = up(wav.clone())
        got = ours(wav.clone())
        assert got.shape == expected.shape, name
        assert torch.equal(got, expected), name
