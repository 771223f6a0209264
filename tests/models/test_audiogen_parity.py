"""AudioGen against upstream audiocraft 1.3.0 on the same tiny weights (issue 11, item 2).

The tiny AudioGen is built by upstream's own builders from its hydra-composed solver config
(`audiogen/audiogen_base_16khz`, T5-large conditioner, 16 kHz EnCodec), randomised and exported
in upstream's format (`tests/upstream_models.py`); both sides load the folder.
"""
import pytest
import torch

from audiocraft_patched.models import AudioGen, MusicGen, load_generator
from audiocraft_patched.models.generators import generator_kind
from upstream_models import assert_same_generation, build_upstream_export, write_back

pytestmark = pytest.mark.upstream

TEXTS = ["dog barking in the rain", "a car passing by"]


@pytest.fixture(scope="module")
def folder(tiny_t5_large_dir, tmp_path_factory):
    return build_upstream_export(tmp_path_factory.mktemp("audiogen"), "audiogen/audiogen_base_16khz", 3)


@pytest.fixture(scope="module")
def pair(folder):
    from audiocraft.models import AudioGen as UpstreamAudioGen

    return UpstreamAudioGen.get_pretrained(str(folder), device="cpu"), AudioGen.get_pretrained(str(folder), "cpu")


def test_loads_as_audiogen_with_upstream_defaults(pair, folder):
    up, ours = pair
    assert generator_kind(folder) == "audiogen" and type(load_generator(folder, "cpu")) is AudioGen
    assert (ours.sample_rate, ours.frame_rate, ours.max_duration) == (up.sample_rate, up.frame_rate, 3)
    assert ours.duration == up.duration == 5  # set right after loading, as upstream
    assert ours.generation_params == up.generation_params
    ours.set_generation_params()
    up.set_generation_params()
    assert (ours.duration, ours.extend_stride, ours.generation_params) == (10, 2, up.generation_params)
    assert type(ours.lm.condition_provider.conditioners["description"]).__name__ == "HFEncoderConditioner"


@pytest.mark.parametrize("params", [dict(use_sampling=False), dict(top_k=10), dict(top_k=0, top_p=0.8),
                                    dict(top_k=20, two_step_cfg=True)], ids=["greedy", "top_k", "top_p", "two_step"])
def test_same_tokens_and_audio(pair, params):
    up, ours = pair
    for model in (up, ours):
        model.set_generation_params(duration=0.6, **params)
    assert assert_same_generation(up, ours, TEXTS, 7).shape == (2, 4, 15)


def test_unconditional_continuation_and_windows(pair):
    """generate_unconditional, generate_continuation, and past max_duration (3 s) by extend_stride (2 s)."""
    up, ours = pair
    prompt = torch.randn(2, 1, 4000, generator=torch.Generator().manual_seed(3))
    calls = {"up": [], "ours": []}
    for model, key in ((up, "up"), (ours, "ours")):
        model.set_generation_params(duration=4.0, top_k=15)
        model.set_custom_progress_callback(lambda done, total, key=key: calls[key].append((done, total)))
    results = []
    for run in (lambda m: m.generate_unconditional(2, progress=True, return_tokens=True),
                lambda m: m.generate_continuation(prompt, 16000, TEXTS, progress=True, return_tokens=True)):
        for model in (up, ours):
            torch.manual_seed(11)
            results.append(run(model)[1])
    assert results[1].shape[-1] == 100 and torch.equal(results[0], results[1])
    assert torch.equal(results[2], results[3])
    assert calls["ours"] and calls["up"]  # the callback is MusicGen's (its counts: tests/models/test_musicgen_api.py)


def test_our_export_loads_in_upstream(folder, tmp_path):
    """The reverse direction: our loaded model, written back by our checkpoint writer, loads in upstream.

    Its config keeps `model: t5` (upstream knows no `hf` conditioner unless patched: patches/)."""
    from audiocraft.models import AudioGen as UpstreamAudioGen

    write_back(AudioGen.get_pretrained(str(folder), "cpu"), folder, tmp_path)
    up = UpstreamAudioGen.get_pretrained(str(tmp_path), device="cpu")
    again = load_generator(tmp_path, "cpu")
    assert type(again) is AudioGen
    for model in (up, again):
        model.set_generation_params(duration=0.6, top_k=10)
    assert_same_generation(up, again, TEXTS, 5)


def test_debug_model_and_errors(folder):
    model = AudioGen.get_pretrained("debug", device="cpu")
    assert (model.sample_rate, model.max_duration, model.duration) == (16000, 10, 5)
    with pytest.raises(ValueError, match="not a melody model"):
        model.generate_with_chroma(["x"], torch.zeros(1, 1, 16000), 16000)
    from audiocraft_patched.models import MAGNeT

    with pytest.raises(TypeError, match="MagnetLMModel"):
        MAGNeT("x", model.compression_model, model.lm)
    assert type(MusicGen.get_pretrained(str(folder), "cpu")) is MusicGen  # as upstream: same LM, MusicGen's API
