"""audio_write's atomic replace and audio_read on truncated / NaN WAVs (issue 16, items 3 and 10)."""
import os

import numpy as np
import pytest
import torch

from audiocraft_patched.data import audio
from audiocraft_patched.data.audio import audio_info, audio_read, audio_write


def _noise(frames: int, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(1, frames, generator=torch.Generator().manual_seed(seed))


def test_interrupted_overwrite_keeps_the_old_file(tmp_path, monkeypatch):
    path = audio_write(tmp_path / "o", _noise(100), 8000)
    old = path.read_bytes()

    def interrupted(wav, encoding):
        raise KeyboardInterrupt  # as Ctrl-C while the samples are written
    monkeypatch.setattr(audio, "_pcm_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        audio_write(tmp_path / "o", _noise(200, seed=1), 8000, overwrite=True)
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["o.wav"]  # no temporary file left either


def test_overwrite_replaces_a_link_instead_of_writing_through_it(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    (tmp_path / "o.wav").symlink_to(target)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        audio_write(tmp_path / "o", _noise(100), 8000)
    path = audio_write(tmp_path / "o", _noise(100), 8000, overwrite=True)
    assert target.read_text() == "keep" and not path.is_symlink() and audio_info(path).duration == 100 / 8000
    assert sorted(os.listdir(tmp_path)) == ["o.wav", "precious.txt"]


def test_new_file_has_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = audio_write(tmp_path / "p", _noise(10), 8000)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_truncated_wav_warns_naming_the_file(tmp_path):
    path = audio_write(tmp_path / "t", _noise(1000), 8000)
    path.write_bytes(path.read_bytes()[:-600])  # the header still announces 1000 frames
    with pytest.warns(UserWarning, match=r"t\.wav is truncated.*600 more bytes.*700 frames"):
        wav, _ = audio_read(path)
    assert wav.shape == (1, 700)


def test_nan_samples_are_refused_naming_the_file(tmp_path):
    path = audio_write(tmp_path / "n", _noise(100), 8000, wav_encoding="pcm_f32le")
    raw = bytearray(path.read_bytes())
    raw[-4 * 30:-4 * 29] = np.float32("nan").tobytes()  # frame 70
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"n\.wav holds 1 NaN or infinite samples \(the first at frame 70"):
        audio_read(path)
    assert audio_read(path, duration=50 / 8000)[0].shape == (1, 50)  # the part before it is fine
