"""MusicGen-melody (mono and stereo) against upstream audiocraft 1.3.0 on the same tiny weights.

Models are built by upstream's own builders from its melody config (`conditioner/chroma2music.yaml`
of `solver/musicgen/musicgen_melody_32khz.yaml`) made small, and saved in its export format.
Both sides take the chroma of the full mix: ours by its explicit option (`melody_stems='full_mix'`),
upstream through a demucs stand-in whose separation returns the mix as the 'vocals' stem (and
silence for the others), so that upstream's vocals + other sum is the mix itself, bit for bit.
"""
import copy
import importlib.machinery
import sys
import types

import pytest
import torch

from audiocraft_patched.models import MusicGen
from audiocraft_patched.models.builders import get_compression_model, get_lm_model
from audiocraft_patched.modules.conditioners import ConditioningAttributes, WavCondition
from audiocraft_patched.utils.tiny import randomize_weights, save_export, tiny_encodec_config, tiny_musicgen_config

SR = 32000
TEXTS = ["calm piano with soft drums", "fast techno beat at 120 bpm, synth and bass", None]


def melody_config(stereo: bool, match_len_on_eval: bool = False) -> tuple[dict, dict]:
    """(LM config, codec config): musicgen_melody_32khz's conditioning, tiny sizes."""
    cfg = tiny_musicgen_config("t5-base", sample_rate=SR, stereo=stereo, segment_duration=18.5)
    # As upstream's conditioner/chroma2music.yaml (radix2_exp 14: 16384-sample windows at 32 kHz).
    cfg["classifier_free_guidance"] = {"training_dropout": 0.2, "inference_coef": 3.0}
    cfg["attribute_dropout"] = {"args": {"active_on_eval": False}, "text": {}, "wav": {"self_wav": 0.5}}
    cfg["fuser"].update(prepend=["self_wav", "description"], cross=[])
    cfg["conditioners"] = {
        "self_wav": {"model": "chroma_stem", "chroma_stem": {
            "sample_rate": SR, "n_chroma": 12, "radix2_exp": 14, "argmax": True,
            "match_len_on_eval": match_len_on_eval, "eval_wavs": None, "n_eval_wavs": 100, "cache_path": None}},
        "description": {"model": "t5", "t5": {"name": "t5-base", "finetune": False, "word_dropout": 0.2,
                                              "normalize_text": False}},
    }
    codec = tiny_encodec_config(SR, 1, n_q=4, card=cfg["transformer_lm"]["card"], ratios=(8, 5, 4, 8))
    return cfg, codec


def composed_melody_config(overrides: tuple[str, ...] = ()):
    """upstream's own `solver=musicgen/musicgen_melody_32khz`, composed by hydra from its sdist's config tree."""
    import os
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "upstream_suite"))
    import runner
    from hydra import compose, initialize_config_dir

    try:
        tree = runner.sdist_tree()
    except runner.SuiteError as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs upstream's sdist (its config tree): {err}")
        pytest.skip(f"upstream sdist unavailable: {err}")
    with initialize_config_dir(config_dir=str(tree / "config"), version_base="1.1"):
        return compose(config_name="config", overrides=["solver=musicgen/musicgen_melody_32khz", *overrides])


@pytest.mark.upstream
@pytest.mark.parametrize("stereo", [False, True], ids=["mono", "stereo"])
def test_tiny_config_is_upstreams_melody_config_made_small(stereo):
    """Everything but the sizes (and the T5 name) comes from the real composed solver config."""
    from omegaconf import OmegaConf

    real = OmegaConf.to_container(composed_melody_config(("channels=2", "interleave_stereo_codebooks.use=true")
                                                         if stereo else ()), resolve=False)
    tiny, _ = melody_config(stereo)
    real["conditioners"]["self_wav"]["chroma_stem"]["sample_rate"] = SR  # was ${sample_rate} (32000)
    assert real["sample_rate"] == SR and real["channels"] == tiny["channels"]
    for key in ("conditioners", "fuser", "classifier_free_guidance", "attribute_dropout", "lm_model"):
        assert tiny[key] == real[key], key
    assert tiny["interleave_stereo_codebooks"]["use"] == real["interleave_stereo_codebooks"]["use"]
    sizes = {"dim", "num_heads", "num_layers", "card", "n_q"}
    assert {k: v for k, v in tiny["transformer_lm"].items() if k not in sizes} == \
        {k: v for k, v in real["transformer_lm"].items() if k not in sizes | {"q_modeling"}}
    assert tiny["codebooks_pattern"]["modeling"] == real["codebooks_pattern"]["modeling"] == "delay"


def _identity_demucs() -> dict[str, types.ModuleType]:
    """A demucs whose 'separation' puts the whole mix in the vocals stem (the full-mix path, for upstream)."""

    class Separator(torch.nn.Module):
        sources = ["drums", "bass", "other", "vocals"]
        samplerate = SR
        audio_channels = 1

    def apply_model(model, wav, device=None, **kwargs):
        silence = torch.zeros_like(wav)
        return torch.stack([silence, silence, silence, wav], dim=1)  # [B, sources, C, T]

    def convert_audio(wav, from_rate, to_rate, channels):
        if from_rate != to_rate:
            raise RuntimeError("the demucs stand-in does not resample")
        return wav.mean(-2, keepdim=True).expand(*wav.shape[:-2], channels, wav.shape[-1])

    modules = {name: types.ModuleType(name) for name in ("demucs", "demucs.pretrained", "demucs.apply",
                                                         "demucs.audio")}
    modules["demucs.pretrained"].get_model = lambda name, repo=None: Separator()
    modules["demucs.apply"].apply_model = apply_model
    modules["demucs.audio"].convert_audio = convert_audio
    for name in ("pretrained", "apply", "audio"):
        setattr(modules["demucs"], name, modules[f"demucs.{name}"])
    return modules


@pytest.fixture(scope="module")
def upstream_demucs():
    """Put the identity demucs in sys.modules for upstream, for this module's tests only."""
    saved = {name: sys.modules.get(name) for name in ("demucs", "demucs.pretrained", "demucs.apply", "demucs.audio")}
    sys.modules.update(_identity_demucs())
    yield
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


def build_upstream_export(folder, stereo: bool, match_len_on_eval: bool = False, seed: int = 0):
    from omegaconf import OmegaConf
    from audiocraft.models import builders

    lm_cfg, codec_cfg = melody_config(stereo, match_len_on_eval)
    torch.manual_seed(seed)
    lm = builders.get_lm_model(OmegaConf.create(copy.deepcopy(lm_cfg)))
    codec = builders.get_compression_model(OmegaConf.create(copy.deepcopy(codec_cfg)))
    randomize_weights(lm, codec, seed)
    save_export(folder / "state_dict.bin", lm.state_dict(), lm_cfg)
    save_export(folder / "compression_state_dict.bin", codec.state_dict(), codec_cfg)
    return folder


def load_pair(folder):
    from audiocraft.models import MusicGen as UpstreamMusicGen

    return UpstreamMusicGen.get_pretrained(str(folder), device="cpu"), MusicGen.get_pretrained(str(folder), "cpu")


@pytest.fixture(scope="module", params=["mono", "stereo"])
def pair(request, upstream_demucs, tiny_t5_dir, tmp_path_factory):
    """(upstream, ours) loaded from the same upstream-built melody export."""
    stereo = request.param == "stereo"
    return load_pair(build_upstream_export(tmp_path_factory.mktemp(request.param), stereo))


def melodies(channels: int = 1, seconds: float = 1.5) -> torch.Tensor:
    """Two melodies [2, C, T] at 32 kHz: note sequences over a low drone, and noise."""
    t = torch.arange(int(seconds * SR)) / SR
    notes = torch.tensor([261.63, 329.63, 392.0, 523.25])[(t * 4).long() % 4]
    tune = torch.sin(2 * torch.pi * torch.cumsum(notes, 0) / SR) + 0.5 * torch.sin(2 * torch.pi * 55 * t)
    noise = 0.3 * torch.randn(t.shape, generator=torch.Generator().manual_seed(4))
    return torch.stack([tune, noise])[:, None].expand(2, channels, t.numel()).contiguous()


def melody_attributes(rows, upstream: bool = False):
    """One ConditioningAttributes per (text, melody [C, T] or None), built as upstream's MusicGen builds them."""
    if upstream:
        from audiocraft.modules.conditioners import ConditioningAttributes as attr_cls, WavCondition as wav_cls
    else:
        attr_cls, wav_cls = ConditioningAttributes, WavCondition
    out = []
    for text, melody in rows:
        cond = (wav_cls(torch.zeros(1, 1, 1), torch.tensor([0]), [SR], [None]) if melody is None
                else wav_cls(melody[None], torch.tensor([melody.shape[-1]]), [SR], [None]))
        out.append(attr_cls(text={"description": text}, wav={"self_wav": cond}))
    return out


def provider_outputs(up_prov, our_prov, rows):
    expected = up_prov(up_prov.tokenize(melody_attributes(rows, upstream=True)))
    with our_prov.conditioners["self_wav"].using_stems("full_mix"):
        got = our_prov(our_prov.tokenize(melody_attributes(rows)))
    assert list(got) == list(expected) == ["description", "self_wav"]  # the prepend order
    torch.testing.assert_close(got["description"][0], expected["description"][0], atol=1e-6, rtol=0)
    assert torch.equal(got["self_wav"][0], expected["self_wav"][0])
    assert torch.equal(got["self_wav"][1], expected["self_wav"][1])
    return got["self_wav"]


@pytest.mark.upstream
def test_conditioner_outputs(pair):
    """As loaded by get_pretrained: chromas looped to the training segment (145 frames for 18.5 s), no mask."""
    up, ours = pair
    wav = melodies()
    chroma, mask = provider_outputs(up.lm.condition_provider, ours.lm.condition_provider,
                                    [(TEXTS[0], wav[0]), (TEXTS[1], wav[1, :, :20000]), (None, None)])
    assert chroma.shape == (3, 145, ours.lm.dim) and mask.all()
    assert ours.lm.condition_provider.conditioners["self_wav"].chroma_len == 145


@pytest.mark.upstream
def test_conditioner_masking_as_configured(upstream_demucs, tiny_t5_dir):
    """As built from the config (match_len_on_eval: false): chroma of the clip's length, padding masked."""
    from omegaconf import OmegaConf
    from audiocraft.models import builders

    cfg, _ = melody_config(stereo=False)
    torch.manual_seed(0)
    up = builders.get_lm_model(OmegaConf.create(copy.deepcopy(cfg))).eval()
    ours = get_lm_model(copy.deepcopy(cfg)).eval()
    ours.load_state_dict(up.state_dict())
    wav = melodies()
    chroma, mask = provider_outputs(up.condition_provider, ours.condition_provider,
                                    [(TEXTS[0], wav[0]), (TEXTS[1], wav[1, :, :20000]), (None, None)])
    assert chroma.shape[1] == 1 + wav.shape[-1] // 4096
    assert mask.sum(1).tolist() == [chroma.shape[1], 5, 0]  # 20000 samples: frames starting before 20000


@pytest.mark.upstream
@pytest.mark.parametrize("params", [dict(use_sampling=False), dict(use_sampling=True, top_k=10),
                                    dict(use_sampling=True, top_k=0, top_p=0.8, temperature=0.7)],
                         ids=["greedy", "top_k", "top_p"])
def test_generate_with_chroma_same_tokens_and_audio(pair, params):
    up, ours = pair
    for model in (up, ours):
        model.set_generation_params(duration=0.5, **params)
    wav = melodies(channels=ours.audio_channels)
    melody_list = [wav[0], None, wav[1]]
    torch.manual_seed(7)
    up_wav, up_tokens = up.generate_with_chroma(TEXTS, melody_list, SR, return_tokens=True)
    torch.manual_seed(7)
    got_wav, tokens = ours.generate_with_chroma(TEXTS, melody_list, SR, return_tokens=True, melody_stems="full_mix")
    assert tokens.shape == (3, ours.lm.num_codebooks, int(0.5 * ours.frame_rate))
    assert torch.equal(tokens, up_tokens)
    torch.testing.assert_close(got_wav, up_wav, atol=1e-5, rtol=0)


@pytest.mark.upstream
def test_melody_changes_the_output(pair):
    _, ours = pair
    ours.set_generation_params(duration=0.5, use_sampling=False)
    wav = melodies(channels=ours.audio_channels)
    _, with_melody = ours.generate_with_chroma(TEXTS[:2], wav, SR, return_tokens=True, melody_stems="full_mix")
    _, without = ours.generate(TEXTS[:2], return_tokens=True)
    assert not torch.equal(with_melody, without)


@pytest.mark.upstream
def test_generate_without_melody_and_other_rates(pair):
    """generate() on a melody model (a null melody per row, as upstream), and a melody at 16 kHz."""
    up, ours = pair
    for model in (up, ours):
        model.set_generation_params(duration=0.5, top_k=10)
    torch.manual_seed(3)
    _, up_tokens = up.generate(TEXTS[:2], return_tokens=True)
    torch.manual_seed(3)
    _, tokens = ours.generate(TEXTS[:2], return_tokens=True)
    assert torch.equal(tokens, up_tokens)
    wav16 = melodies()[:, :, ::2].contiguous()  # resampled on both sides by their convert_audio
    torch.manual_seed(4)
    _, up_tokens = up.generate_with_chroma(TEXTS[:2], wav16, 16000, return_tokens=True)
    torch.manual_seed(4)
    _, tokens = ours.generate_with_chroma(TEXTS[:2], wav16, 16000, return_tokens=True, melody_stems="full_mix")
    assert torch.equal(tokens, up_tokens)


@pytest.mark.upstream
def test_past_max_duration_each_window_takes_its_part_of_the_melody(pair):
    """19 s from a 18.5 s model: the second window's melody starts 1 s in, looping (as upstream)."""
    up, ours = pair
    for model in (up, ours):
        model.set_generation_params(duration=19.0, top_k=10, extend_stride=1.0)
    wav = melodies(channels=ours.audio_channels, seconds=1.3)[:1]
    torch.manual_seed(6)
    _, up_tokens = up.generate_with_chroma(TEXTS[:1], wav, SR, return_tokens=True)
    torch.manual_seed(6)
    _, tokens = ours.generate_with_chroma(TEXTS[:1], wav, SR, return_tokens=True, melody_stems="full_mix")
    assert tokens.shape[-1] == int(19.0 * ours.frame_rate)
    assert torch.equal(tokens, up_tokens)


@pytest.mark.upstream
@pytest.mark.parametrize("stereo", [False, True], ids=["mono", "stereo"])
def test_our_export_loads_in_upstream(stereo, upstream_demucs, tiny_t5_dir, tmp_path):
    """A melody model built by our builders and written by our exporter generates the same in upstream."""
    from audiocraft.models import MusicGen as UpstreamMusicGen
    from audiocraft_patched.utils.export import save_checkpoint

    lm_cfg, codec_cfg = melody_config(stereo)
    torch.manual_seed(2)
    lm, codec = get_lm_model(copy.deepcopy(lm_cfg)), get_compression_model(copy.deepcopy(codec_cfg))
    randomize_weights(lm, codec, 2)
    # The melody entry and the fuser lists are written from the modules' own config().
    save_checkpoint(tmp_path / "state_dict.bin", lm.state_dict(), lm_cfg,
                    conditioners={"self_wav": lm.condition_provider.conditioners["self_wav"]}, fuser=lm.fuser)
    save_export(tmp_path / "compression_state_dict.bin", codec.state_dict(), codec_cfg)
    up = UpstreamMusicGen.get_pretrained(str(tmp_path), device="cpu")
    ours = MusicGen.get_pretrained(str(tmp_path), device="cpu")
    for model in (up, ours):
        model.set_generation_params(duration=0.5, top_k=10)
    wav = melodies(channels=2 if stereo else 1)
    torch.manual_seed(5)
    up_wav, up_tokens = up.generate_with_chroma(TEXTS[:2], wav, SR, return_tokens=True)
    torch.manual_seed(5)
    got_wav, tokens = ours.generate_with_chroma(TEXTS[:2], wav, SR, return_tokens=True, melody_stems="full_mix")
    assert torch.equal(tokens, up_tokens)
    torch.testing.assert_close(got_wav, up_wav, atol=1e-5, rtol=0)


# Without upstream: stem separation (demucs present or not), the explicit full-mix option, errors.

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
        build_conditioner("chroma_stem", 8, duration=1.0, **{**config["chroma_stem"], "cache_path": "/tmp/x"})


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
