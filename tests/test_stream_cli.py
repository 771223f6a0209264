"""generate --stream and -o -: the WAV is written while generating; stdout carries only the WAV."""
import io
import sys
import wave

from audiocraft_patched import cli


def test_stream_to_file_and_to_stdout(tiny_musicgen_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "s.wav"
    args = ["generate", str(tiny_musicgen_dir), "calm piano", "--duration", "1", "--seed", "1", "-q"]
    assert cli.main(args + ["--stream", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "first audio after" in said and f"wrote {out} (1.00 s" in said
    with wave.open(str(out)) as w:
        assert w.getnframes() == w.getframerate() * 1
        from_file = w.readframes(w.getnframes())

    stdout = io.TextIOWrapper(io.BytesIO())
    monkeypatch.setattr(sys, "stdout", stdout)
    assert cli.main(args + ["-o", "-"]) == 0
    piped = stdout.buffer.getvalue()
    assert piped[:4] == b"RIFF" and piped[44:] == from_file  # same seed, same audio; no text in the stream
    monkeypatch.undo()
    assert "wrote stdout" in capsys.readouterr().err
    two = ["generate", str(tiny_musicgen_dir), "calm piano", "jazz", "--stream", "-o", str(tmp_path / "two.wav")]
    assert cli.main(two) == 2
    assert "--stream and -o - take one text prompt" in capsys.readouterr().err
