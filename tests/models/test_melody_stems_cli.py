"""MusicGen-melody without upstream: stem separation (demucs present or not), the explicit full-mix
option, input errors, the config round trip, the CLI's --melody, and the encoder tools on a melody model."""
import copy
import importlib.machinery
import sys
import types

import pytest
import torch
from melody_helpers import SR, TEXTS, melodies, melody_config

from audiocraft_patched.models import MusicGen
from audiocraft_patched.models.builders import get_compression_model, get_lm_model
from audiocraft_patched.modules.conditioners import WavCondition
from audiocraft_patched.utils.tiny import randomize_weights, save_export


@pytest.fixture(scope="module")
def our_melody_dir(tiny_t5_dir, tmp_path_factory):
    """A mono melody MusicGen export built by our builders (no upstream needed)."""
    folder = tmp_path_factory.mktemp("our-melody")
    lm_cfg, codec_cfg = melody_config(stereo=False)
    torch.manual_seed(3)
    lm, codec = get_lm_model(copy.deepcopy(lm_cfg)), get_compression_model(copy.deepcopy(codec_cfg))
    randomize_weights(lm, codec, 3)
    save_export(folder / "state_dict.bin", lm.state_dict(), lm_cfg)
    save_export(folder / "compression_state_dict.bin", codec.state_dict(), codec_cfg)
    return folder


@pytest.fixture(scope="module")
def our_melody(our_melody_dir):
    model = MusicGen.get_pretrained(str(our_melody_dir), device="cpu")
    model.set_generation_params(duration=0.3, use_sampling=False)
    return model


def test_missing_demucs_is_an_error_naming_the_full_mix_option(our_melody, monkeypatch):
    from audiocraft_patched.modules.conditioners.chroma import StemSeparationUnavailable

    monkeypatch.setitem(sys.modules, "demucs", None)  # as if not installed
    with pytest.raises(StemSeparationUnavailable, match="not installed") as info:
        our_melody.generate_with_chroma(TEXTS[:2], melodies(), SR)
    assert "melody_stems='full_mix'" in str(info.value) and "--melody-full-mix" in str(info.value)
    assert "approximation" in str(info.value)
    wav = our_melody.generate_with_chroma(TEXTS[:2], melodies(), SR, melody_stems="full_mix")
    assert wav.shape == (2, 1, int(0.3 * our_melody.frame_rate) * 1280)  # 1280: the tiny codec's hop
    assert our_melody.lm.condition_provider.conditioners["self_wav"].stems == "demucs"  # the option was per call
    our_melody.generate(TEXTS[:2])  # no melody: nothing to separate, demucs is not needed


def fake_demucs(monkeypatch, tmp_path, stems_of):
    """Install a demucs package whose htdemucs listing and torch hub cache live under tmp_path."""
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "htdemucs.yaml").write_text("models: ['955717e8']\n")
    (remote / "files.txt").write_text("# Hybrid Transformer models\nroot: hybrid_transformer/\n955717e8-8726e21a.th\n")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    calls = []

    class Separator(torch.nn.Module):
        sources = ["drums", "bass", "other", "vocals"]
        samplerate = 44100
        audio_channels = 2

    def apply_model(model, wav, device=None, **kwargs):
        calls.append(tuple(wav.shape))
        return stems_of(wav)

    modules = {name: types.ModuleType(name) for name in ("demucs", "demucs.pretrained", "demucs.apply")}
    modules["demucs"].__spec__ = importlib.machinery.ModuleSpec("demucs", loader=None)
    modules["demucs.pretrained"].REMOTE_ROOT = remote
    modules["demucs.pretrained"].get_model = lambda name, repo=None: Separator()
    modules["demucs.apply"].apply_model = apply_model
    modules["demucs"].pretrained, modules["demucs"].apply = modules["demucs.pretrained"], modules["demucs.apply"]
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return tmp_path / "hub" / "checkpoints" / "955717e8-8726e21a.th", calls


def test_demucs_from_the_local_cache_keeps_vocals_and_other(monkeypatch, tmp_path):
    from audiocraft_patched.modules.conditioners.chroma import ChromaStemConditioner, StemSeparationUnavailable

    def tone(freq, n):
        return torch.sin(2 * torch.pi * freq * torch.arange(n) / 44100)

    def stems_of(wav):  # [B, 2, T] at 44.1 kHz -> loud C drums and bass, an A in 'other', silent vocals
        n = wav.shape[-1]
        parts = [3 * tone(261.63, n), 3 * tone(65.41, n), tone(440.0, n), torch.zeros(n)]
        return torch.stack(parts)[None, :, None].expand(wav.shape[0], 4, 2, n)

    weights, calls = fake_demucs(monkeypatch, tmp_path, stems_of)
    conditioner = ChromaStemConditioner(output_dim=8, sample_rate=SR, n_chroma=12, radix2_exp=12, duration=2.0,
                                        match_len_on_eval=False, argmax=True)
    mix = WavCondition(melodies()[:1], torch.tensor([int(1.5 * SR)]), [SR], [None])
    with pytest.raises(StemSeparationUnavailable, match="not in the local cache") as info:
        conditioner.encode(mix)
    assert str(weights) in str(info.value) and "melody_stems='full_mix'" in str(info.value)
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")  # present: demucs itself would load it from there
    chroma, mask = conditioner.encode(mix)
    assert calls == [(1, 2, int(1.5 * 44100))]  # resampled to demucs' rate and channels
    assert chroma.shape == (1, 1 + int(1.5 * SR) // 1024, 12) and mask.all()
    assert (chroma[0, 2:-2].argmax(-1) == 9).all()  # only the A of 'other' + 'vocals' is left
    with conditioner.using_stems("full_mix"):
        full, _ = conditioner.encode(mix)
    assert not (full[0, 2:-2].argmax(-1) == 9).all()


def test_melody_input_errors(our_melody, tiny_musicgen_dir):
    with pytest.raises(ValueError, match="not a melody model"):
        MusicGen.get_pretrained(str(tiny_musicgen_dir), "cpu").generate_with_chroma(["x"], melodies()[0], SR)
    with pytest.raises(ValueError, match=r"must be \[B, C, T\]"):
        our_melody.generate_with_chroma(["x"], torch.zeros(100), SR, melody_stems="full_mix")
    with pytest.raises(ValueError, match="2 descriptions for 1 melodies"):
        our_melody.generate_with_chroma(TEXTS[:2], melodies()[0], SR, melody_stems="full_mix")
    with pytest.raises(ValueError, match="melody 0 must be a non-empty tensor"):
        our_melody.generate_with_chroma(["x"], [torch.zeros(1, 0)], SR, melody_stems="full_mix")
    with pytest.raises(ValueError, match="melody stems must be one of"):
        our_melody.generate_with_chroma(["x"], melodies()[0], SR, melody_stems="vocals")


def test_config_round_trip(our_melody):
    from audiocraft_patched.modules.conditioners import build_conditioner

    conditioner = our_melody.lm.condition_provider.conditioners["self_wav"]
    config = conditioner.config()
    assert config == {"model": "chroma_stem", "chroma_stem": {
        "sample_rate": SR, "n_chroma": 12, "radix2_exp": 14, "argmax": True, "match_len_on_eval": False,
        "eval_wavs": None, "n_eval_wavs": 100, "cache_path": None}}  # as configured, and upstream's keys only
    rebuilt = build_conditioner("chroma_stem", our_melody.lm.dim, duration=18.5, **config["chroma_stem"])
    rebuilt.load_state_dict(conditioner.state_dict())
    with pytest.raises(ValueError, match="cache_path"):
        build_conditioner("chroma_stem", 8, duration=1.0, **{**config["chroma_stem"], "cache_path": "features"})


def test_cli_melody(our_melody_dir, tiny_musicgen_dir, tmp_path, capsys, monkeypatch):
    from audiocraft_patched.cli import main
    from audiocraft_patched.data.audio import audio_write

    ref = audio_write(tmp_path / "ref", melodies()[0], SR, strategy="peak")
    base = ["generate", str(our_melody_dir), "calm piano", "--melody", str(ref), "--duration", "0.3", "-q"]
    monkeypatch.setitem(sys.modules, "demucs", None)  # as if not installed
    assert main(base + ["-o", str(tmp_path / "a.wav")]) == 2
    assert "--melody-full-mix" in capsys.readouterr().err
    assert main(base + ["--melody-full-mix", "-o", str(tmp_path / "a.wav")]) == 0
    assert (tmp_path / "a.wav").stat().st_size > 44
    assert main(["generate", str(tiny_musicgen_dir), "calm piano", "--melody", str(ref), "--melody-full-mix",
                 "-o", str(tmp_path / "b.wav")]) == 2
    assert "not a melody model" in capsys.readouterr().err
    assert main(["generate", str(our_melody_dir), "x", "--melody-full-mix", "-o", str(tmp_path / "c.wav")]) == 2
    assert "give a melody WAV" in capsys.readouterr().err
    assert main(base + ["--melody", str(tmp_path / "missing.wav"), "-o", str(tmp_path / "d.wav")]) == 2
    assert "no such audio file" in capsys.readouterr().err


def test_swap_and_align_keep_the_melody_conditioner(our_melody_dir, tmp_path):
    """The encoder tools on a melody checkpoint: the text encoder changes, the chroma conditioner stays."""
    from audiocraft_patched.cli import main
    from audiocraft_patched.utils.tiny import captions, make_tiny_t5

    student = make_tiny_t5(tmp_path / "student", d_model=48, seed=1)
    (tmp_path / "captions.txt").write_text("\n".join(captions(24)))
    assert main(["swap", str(our_melody_dir), "--encoder", str(student), "-o", str(tmp_path / "swapped")]) == 0
    assert main(["align", str(our_melody_dir), "--student", str(student), "--captions", str(tmp_path / "captions.txt"),
                 "--steps", "2", "--batch-size", "4", "--losses", "kl=1", "-o", str(tmp_path / "aligned"), "-q"]) == 0
    original = MusicGen.get_pretrained(str(our_melody_dir), "cpu").lm.condition_provider.conditioners["self_wav"]
    for name in ("swapped", "aligned"):
        model = MusicGen.get_pretrained(str(tmp_path / name), "cpu")
        melody = model.lm.condition_provider.conditioners["self_wav"]
        assert melody.config() == original.config()
        assert all(torch.equal(v, original.state_dict()[k]) for k, v in melody.state_dict().items())
        assert model.lm.condition_provider.conditioners["description"].dim == 48
        model.set_generation_params(duration=0.3, use_sampling=False)
        wav = model.generate_with_chroma(["calm piano"], melodies()[:1], SR, melody_stems="full_mix")
        assert wav.shape[:2] == (1, 1) and torch.isfinite(wav).all()
