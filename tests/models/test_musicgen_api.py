"""The MusicGen API on a tiny model: behaviour and every bad input's message."""
import pytest
import torch

from audiocraft_patched.models import MusicGen
from audiocraft_patched.models.loaders import CheckpointError


@pytest.fixture(scope="module")
def model(tiny_musicgen_dir):
    m = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")
    m.set_generation_params(duration=0.2, top_k=10)
    return m


def test_properties_and_shapes(model):
    assert model.sample_rate == 16000 and model.audio_channels == 1 and model.frame_rate == 25
    assert model.max_duration == 18.5
    wav, tokens = model.generate(["calm piano", None], return_tokens=True)
    assert tokens.shape == (2, 4, 5) and wav.shape == (2, 1, 5 * 640)
    assert set(model.timings) == {"conditioning", "conditioning.description", "lm", "decode"}
    assert 0 < model.timings["conditioning.description"] <= model.timings["conditioning"]


def test_unconditional_and_progress_callback(model):
    calls = []
    model.set_custom_progress_callback(lambda done, total: calls.append((done, total)))
    wav = model.generate_unconditional(3, progress=True)
    model.set_custom_progress_callback(None)
    assert wav.shape[0] == 3
    assert calls[-1] == (calls[-1][1], calls[-1][1]) and len(calls) == 5 + 3  # T + max delay steps


def test_seeded_generation_is_deterministic(model):
    torch.manual_seed(3)
    a = model.generate(["jazz"], return_tokens=True)[1]
    torch.manual_seed(3)
    b = model.generate(["jazz"], return_tokens=True)[1]
    assert torch.equal(a, b)


def test_none_rows_equal_empty_rows(model):
    """None and '' both give the CFG null condition."""
    model.set_generation_params(duration=0.2, use_sampling=False)
    a = model.generate([None, "rock"], return_tokens=True)[1]
    b = model.generate(["", "rock"], return_tokens=True)[1]
    model.set_generation_params(duration=0.2, top_k=10)
    assert torch.equal(a, b)


@pytest.mark.parametrize("descriptions, error, message", [
    ([], ValueError, "descriptions is empty"),
    ("calm piano", TypeError, "wrap it as \\[text\\]"),
    (["ok", 3], TypeError, "must be str or None, got \\['int'\\]"),
])
def test_bad_descriptions(model, descriptions, error, message):
    with pytest.raises(error, match=message):
        model.generate(descriptions)


@pytest.mark.parametrize("duration", [0, -1.0])
def test_bad_duration(model, duration):
    with pytest.raises(ValueError, match="duration must be > 0"):
        model.set_generation_params(duration=duration)


def test_bad_prompt_shape(model):
    with pytest.raises(ValueError, match=r"prompt must be \[B, C, T\]"):
        model.generate_continuation(torch.zeros(10), 16000)


def test_missing_folder_and_partial_folder(tmp_path, tiny_musicgen_dir):
    with pytest.raises(CheckpointError, match="no such file or folder"):
        MusicGen.get_pretrained(str(tmp_path / "nope"), device="cpu")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "state_dict.bin").write_bytes((tiny_musicgen_dir / "state_dict.bin").read_bytes())
    with pytest.raises(CheckpointError, match="has no compression_state_dict.bin"):
        MusicGen.get_pretrained(str(tmp_path / "partial"), device="cpu")


def test_unknown_hub_name_offline():
    with pytest.raises(CheckpointError, match="neither a folder nor a model in the local Hugging Face cache"):
        MusicGen.get_pretrained("facebook/musicgen-nonexistent", device="cpu")


def test_wrong_file_format(tmp_path):
    (tmp_path / "state_dict.bin").write_text("not a checkpoint")
    (tmp_path / "compression_state_dict.bin").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        MusicGen.get_pretrained(str(tmp_path), device="cpu")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "state_dict.bin")
    with pytest.raises(CheckpointError, match="not an audiocraft export"):
        MusicGen.get_pretrained(str(tmp_path), device="cpu")


def test_unsafe_pickle_is_refused(tmp_path):
    torch.save({"best_state": {}, "xp.cfg": "", "obj": CheckpointError("arbitrary object")},
               tmp_path / "state_dict.bin")
    with pytest.raises(CheckpointError, match="refused for safety"):
        MusicGen.get_pretrained(str(tmp_path), device="cpu")


def test_hub_name_resolved_from_local_cache(tiny_musicgen_dir):
    import shutil

    from conftest import put_in_hf_cache

    put_in_hf_cache("facebook/musicgen-tiny-test", lambda folder: shutil.copytree(tiny_musicgen_dir, folder))
    model = MusicGen.get_pretrained("facebook/musicgen-tiny-test", device="cpu")
    assert model.name == "facebook/musicgen-tiny-test" and model.lm.num_codebooks == 4


def test_set_text_encoder_delegates_to_swap(tiny_musicgen_dir, tmp_path):
    from audiocraft_patched.utils.tiny import make_tiny_t5

    model = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")
    conditioner = model.set_text_encoder(str(make_tiny_t5(tmp_path / "t5-small", d_model=48)))
    assert model.lm.condition_provider.conditioners["description"] is conditioner
    assert conditioner.output_proj.in_features == 48 and conditioner.projection_origin == "new"
    model.set_generation_params(duration=0.2)
    assert model.generate(["calm piano"]).shape == (1, 1, 5 * 640)
