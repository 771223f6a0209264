"""The command line: generate (with the embedded default and a folder), inspect, bad input."""
import wave

from audiocraft_patched.cli import main


def test_generate_default_model_writes_wav(tmp_path, capsys):
    out = tmp_path / "x.wav"
    assert main(["generate", "calm piano", "-o", str(out), "--duration", "0.5", "-q"]) == 0
    with wave.open(str(out)) as f:
        assert f.getframerate() == 16000 and f.getnframes() == 8000
    printed = capsys.readouterr()
    assert "timing: conditioning" in printed.out and "ms/step" in printed.out
    assert "untrained" in printed.err  # the default model says plainly what it is
    # never overwrites without being asked
    assert main(["generate", "calm piano", "-o", str(out), "--duration", "0.5", "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["generate", "calm piano", "-o", str(out), "--duration", "0.5", "-q", "--overwrite"]) == 0


def test_generate_with_model_folder_and_several_prompts(tmp_path, tiny_musicgen_dir, capsys):
    out = tmp_path / "y.wav"
    assert main(["generate", str(tiny_musicgen_dir), "rock", "jazz", "-o", str(out), "--duration", "0.2", "-q"]) == 0
    assert (tmp_path / "y_0.wav").is_file() and (tmp_path / "y_1.wav").is_file()


def test_generate_bad_duration(tmp_path, capsys):
    assert main(["generate", "calm piano", "-o", str(tmp_path / "z.wav"), "--duration", "0"]) == 2
    assert "--duration must be > 0" in capsys.readouterr().err


def test_inspect(tiny_musicgen_dir, capsys):
    assert main(["inspect", str(tiny_musicgen_dir)]) == 0
    out = capsys.readouterr().out
    assert "encoder 't5-base' (T5EncoderModel, width 768" in out
    assert "output_proj: Linear(768 -> 32)" in out
    assert "codebooks: 4 x card 64, pattern DelayedPatternProvider delays [0, 1, 2, 3]" in out
    assert "16000 Hz, 1 channel(s), 25 frames/s" in out
    assert "matmul forms: F.linear everywhere so far (measured at the first generation of each shape)" in out


def test_inspect_missing_model(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
