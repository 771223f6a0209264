"""WavStreamWriter: the file is a valid WAV after every chunk; a pipe gets the 'unknown length' header."""
import io
import wave

import pytest
import torch

from audiocraft_patched.data.wav_stream import WavStreamWriter


def test_file_is_valid_after_every_chunk(tmp_path):
    path = tmp_path / "s.wav"
    chunks = [torch.linspace(-1.5, 1.5, 2 * 300).reshape(2, 300), torch.zeros(2, 100)]
    with WavStreamWriter(path, 8000, 2) as out:
        with wave.open(str(path)) as w:
            assert w.getnframes() == 0 and w.getframerate() == 8000 and w.getnchannels() == 2
        written = 0
        for chunk in chunks:
            out.write(chunk)
            written += chunk.shape[1]
            with wave.open(str(path)) as w:  # read while the writer still holds the file
                assert w.getnframes() == written and w.getsampwidth() == 2
                frames = torch.frombuffer(bytearray(w.readframes(written)), dtype=torch.int16).reshape(-1, 2).T
    assert frames[0, 0] == -32767 and frames[1, 299] == 32767  # clipped, channels interleaved
    with pytest.raises(FileExistsError, match="--overwrite"):
        WavStreamWriter(path, 8000, 2)
    with pytest.raises(ValueError, match=r"expected audio \[2, samples\]"):
        WavStreamWriter(path, 8000, 2, overwrite=True).write(torch.zeros(1, 5))


class Pipe(io.BytesIO):
    def seekable(self):
        return False


def test_pipe_gets_an_open_ended_header():
    pipe = Pipe()
    with WavStreamWriter(pipe, 16000, 1) as out:
        out.write(torch.zeros(1, 10))
    data = pipe.getvalue()
    assert data[:4] == b"RIFF" and data[40:44] == b"\xff\xff\xff\xff" and len(data) == 44 + 20
