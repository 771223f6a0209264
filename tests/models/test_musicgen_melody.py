"""MusicGen-melody (mono and stereo) against upstream audiocraft 1.3.0 on the same tiny weights.

Models are built by upstream's own builders from its melody config (`conditioner/chroma2music.yaml`
of `solver/musicgen/musicgen_melody_32khz.yaml`) made small, and saved in its export format.
Both sides take the chroma of the full mix: ours by its explicit option (`melody_stems='full_mix'`),
upstream through a demucs stand-in whose separation returns the mix as the 'vocals' stem (and
silence for the others), so that upstream's vocals + other sum is the mix itself, bit for bit.
"""
import copy

import pytest
import torch
from melody_helpers import SR, TEXTS, composed_melody_config, melodies, melody_config
from upstream_models import assert_same_generation, build_dict_export, identity_demucs

from audiocraft_patched.models import MusicGen
from audiocraft_patched.models.builders import get_compression_model, get_lm_model
from audiocraft_patched.modules.conditioners import ConditioningAttributes, WavCondition
from audiocraft_patched.utils.tiny import randomize_weights, save_export


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


@pytest.fixture(scope="module")
def upstream_demucs():
    """Put the identity demucs in sys.modules for upstream, for this module's tests only."""
    with identity_demucs(SR):
        yield


def build_upstream_export(folder, stereo: bool, match_len_on_eval: bool = False, seed: int = 0):
    """Upstream's builders on the tiny melody config, randomised, exported."""
    return build_dict_export(folder, *melody_config(stereo, match_len_on_eval), seed=seed)


def load_pair(folder):
    from audiocraft.models import MusicGen as UpstreamMusicGen

    return UpstreamMusicGen.get_pretrained(str(folder), device="cpu"), MusicGen.get_pretrained(str(folder), "cpu")


@pytest.fixture(scope="module", params=["mono", "stereo"])
def pair(request, upstream_demucs, tiny_t5_dir, tmp_path_factory):
    """(upstream, ours) loaded from the same upstream-built melody export."""
    stereo = request.param == "stereo"
    return load_pair(build_upstream_export(tmp_path_factory.mktemp(request.param), stereo))


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
    assert_same_generation(up, ours, TEXTS[:2], 3)
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


@pytest.mark.upstream
def test_export_of_the_composed_config(upstream_demucs, tiny_t5_dir, tmp_path):
    """An export whose xp.cfg is the whole composed solver config (as real ones are), sizes overridden."""
    from omegaconf import OmegaConf
    from audiocraft.models import builders

    cfg = composed_melody_config(("device=cpu", "dataset.segment_duration=18.5", "transformer_lm.dim=32",
                                  "transformer_lm.num_heads=4", "transformer_lm.num_layers=2",
                                  "transformer_lm.card=64"))
    _, codec_cfg = melody_config(stereo=False)
    torch.manual_seed(4)
    lm, codec = builders.get_lm_model(cfg), builders.get_compression_model(OmegaConf.create(codec_cfg))
    randomize_weights(lm, codec, 4)
    torch.save({"best_state": lm.state_dict(), "xp.cfg": OmegaConf.to_yaml(cfg), "version": "1.3.0",
                "exported": True}, tmp_path / "state_dict.bin")
    save_export(tmp_path / "compression_state_dict.bin", codec.state_dict(), codec_cfg)
    up, ours = load_pair(tmp_path)
    for model in (up, ours):
        model.set_generation_params(duration=0.5, top_k=10)
    torch.manual_seed(8)
    up_wav, up_tokens = up.generate_with_chroma(TEXTS, [melodies()[0], None, melodies()[1]], SR, return_tokens=True)
    torch.manual_seed(8)
    wav, tokens = ours.generate_with_chroma(TEXTS, [melodies()[0], None, melodies()[1]], SR, return_tokens=True,
                                            melody_stems="full_mix")
    assert torch.equal(tokens, up_tokens)
    torch.testing.assert_close(wav, up_wav, atol=1e-5, rtol=0)
