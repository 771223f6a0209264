"""align / finetune never write over their source or a finished run, and bad state is a clear error (issue 16, 2, 13).

Every refusal here happens before a model is built, so these tests take a second.
"""
import math
import shutil
import struct
from types import SimpleNamespace

import pytest
import torch

from audiocraft_patched.align.data import AudioItem, encode_audio_tokens
from audiocraft_patched.align.tasks import cached
from audiocraft_patched.align.train import LOG_FILE, STATE_FILE, Dist, TrainConfig, train
from audiocraft_patched.cli import main
from audiocraft_patched.data.audio import audio_write
from audiocraft_patched.models import MusicGen


@pytest.fixture()
def source(tiny_musicgen_dir, tmp_path):
    """A throw-away copy of the tiny model: a failing guard must not damage the session's fixture."""
    return shutil.copytree(tiny_musicgen_dir, tmp_path / "source")


def config(source, out, **kwargs) -> TrainConfig:
    return TrainConfig(mode="align", model=str(source), out=str(out), student="unused-student", captions="unused.txt",
                       steps=2, batch_size=2, progress=False, **kwargs)


def test_output_folder_equal_to_the_source_is_refused(source):
    before = (source / "state_dict.bin").read_bytes()
    with pytest.raises(ValueError, match="is the source checkpoint.*choose another -o"):
        train(config(source, source))
    with pytest.raises(ValueError, match="is the source checkpoint"):
        train(config(source, source / "." / ".." / "source"))
    assert (source / "state_dict.bin").read_bytes() == before and sorted(p.name for p in source.iterdir()) == [
        "compression_state_dict.bin", "state_dict.bin"]


def test_a_finished_run_is_not_replaced_without_resume_or_overwrite(source, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    log = "".join(f'{{"step": {i}}}\n' for i in range(402))
    (out / LOG_FILE).write_text(log)
    (out / STATE_FILE).write_bytes(b"a train state")
    with pytest.raises(FileExistsError, match=r"already holds a run \(log.jsonl, train_state.pt\).*--resume.*"
                                              r"--overwrite"):
        train(config(source, out))
    assert (out / LOG_FILE).read_text() == log and (out / STATE_FILE).read_bytes() == b"a train state"


def test_resume_without_a_state_is_an_error(source, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--resume: .*train_state.pt does not exist: nothing to resume"):
        train(config(source, tmp_path / "new", resume=True))
    assert not (tmp_path / "new" / LOG_FILE).exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", None])
def test_corrupt_train_state_is_a_clear_error(source, tmp_path, content):
    out = tmp_path / "run"
    out.mkdir()
    if content is None:
        torch.save({"step": 3}, out / STATE_FILE)  # readable, but not a train state
    else:
        (out / STATE_FILE).write_bytes(content)
    with pytest.raises(ValueError, match=r"train_state.pt cannot be read as a train state.*--overwrite"):
        train(config(source, out, resume=True))


@pytest.mark.parametrize("option", ["save_every", "log_every"])
def test_zero_intervals_are_refused(source, tmp_path, option):
    with pytest.raises(ValueError, match=f"{option} must be >= 1"):
        config(source, tmp_path / "o", **{option: 0})


def test_cli_save_every_0_and_overwrite_flag(source, tmp_path, capsys):
    args = ["align", str(source), "--student", "x", "--captions", "c.txt", "-o", str(source), "-q"]
    assert main([*args, "--save-every", "0"]) == 2
    assert "save_every must be >= 1" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 2  # --overwrite never means "over the source"
    assert "is the source checkpoint" in capsys.readouterr().err


def test_corrupt_feature_cache_is_recomputed_with_a_warning(tmp_path):
    path = tmp_path / "align_features.pt"
    path.write_bytes(b"PK\x03\x04 not a whole file")
    with pytest.warns(UserWarning, match="align_features.pt cannot be read.*computing it again"):
        data = cached(path, "k", Dist(), lambda: {"x": torch.ones(2)})
    assert torch.equal(data["x"], torch.ones(2)) and torch.load(path, weights_only=True)["key"] == "k"
    path.write_bytes(b"damaged again")
    with pytest.raises(RuntimeError, match="rank 1: .*align_features.pt.*cannot be read"):
        cached(path, "k", SimpleNamespace(rank=1, world=2, barrier=lambda: None), lambda: {})


@pytest.fixture(scope="module")
def codec(tiny_musicgen_dir):
    return MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu").compression_model


def test_empty_and_nan_wavs_in_finetune_are_named(codec, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000,
                                                                                      2, 16) + b"data" + bytes(4))
    with pytest.raises(ValueError, match=r"empty\.wav holds no audio.*remove it from the manifest"):
        encode_audio_tokens([AudioItem(empty, "calm")], codec, tmp_path / "tokens")
    nan = audio_write(tmp_path / "nan", torch.zeros(1, 1600), 16000, wav_encoding="pcm_f32le", normalize=False)
    raw = bytearray(nan.read_bytes())
    raw[-4:] = struct.pack("<f", math.nan)
    nan.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"nan\.wav holds 1 NaN or infinite samples"):
        encode_audio_tokens([AudioItem(nan, "calm")], codec, tmp_path / "tokens")
