"""The encoder swap, the embedding cache, `inspect`, `generate`, `align` and `compare-encoders` on AudioGen and
MAGNeT checkpoints (issue 11, items 6 and 7), on tiny ones built by upstream from its composed solver configs.

For MAGNeT, compare's LM metrics (KL, top-1) come from one teacher-forced forward with full attention
(`compute_predictions`, no decoding stage): how alike two conditionings steer the LM, not MAGNeT's decoding.
"""
import json

import pytest
import torch

from audiocraft_patched.cli import main
from audiocraft_patched.data.audio import audio_read
from audiocraft_patched.models import AudioGen, MAGNeT, load_generator
from audiocraft_patched.utils.tiny import make_tiny_t5
from upstream_models import build_upstream_export

pytestmark = pytest.mark.upstream

TEXTS = ["rain on a tin roof", "a dog barking"]
KINDS = {"audiogen": ("audiogen/audiogen_base_16khz", AudioGen, 3), "magnet": ("magnet/magnet_32khz", MAGNeT, 2)}


@pytest.fixture(scope="module", params=sorted(KINDS))
def folder(request, tiny_t5_dir, tiny_t5_large_dir, tmp_path_factory):
    solver, _, seconds = KINDS[request.param]
    out = build_upstream_export(tmp_path_factory.mktemp(request.param), solver, seconds)
    yield request.param, out
    from audiocraft.modules import transformer

    transformer.set_efficient_attention_backend("torch")  # upstream's MAGNeT loader is not run here; to be sure


@pytest.fixture(scope="module")
def other_encoder(tmp_path_factory):
    """A tiny T5 of another width (48): a swap to it needs a new projection."""
    return make_tiny_t5(tmp_path_factory.mktemp("t5-48"), d_model=48, num_heads=2, d_kv=8, d_ff=32, seed=3)


def _tokens(model, seed=0):
    if isinstance(model, MAGNeT):
        model.set_generation_params(use_sampling=False, decoding_steps=[3, 2, 2, 2])
    else:
        model.set_generation_params(duration=0.6, use_sampling=False)
    torch.manual_seed(seed)
    return model.generate(TEXTS, return_tokens=True)[1]


def test_set_text_encoder_and_cache(folder, other_encoder, tiny_t5_dir, tiny_t5_large_dir):
    kind, path = folder
    model = load_generator(path, "cpu")
    assert type(model) is KINDS[kind][1]
    before = _tokens(model)
    same = str(tiny_t5_large_dir if kind == "audiogen" else tiny_t5_dir)  # the very encoder it was built with
    kept = model.set_text_encoder(same)
    assert kept.projection_origin == "kept" and torch.equal(_tokens(model), before)
    cache = kept.enable_cache()
    first, second = _tokens(model), _tokens(model)
    assert cache.hits > 0 and torch.equal(first, before) and torch.equal(second, before)  # bit-identical with it
    new = model.set_text_encoder(str(other_encoder))
    assert new.projection_origin == "new" and new.output_proj.in_features == 48
    assert _tokens(model).shape == before.shape


def test_swap_inspect_generate_cli(folder, other_encoder, tmp_path, capsys):
    kind, path = folder
    name = {"audiogen": "AudioGen", "magnet": "MAGNeT"}[kind]
    assert main(["inspect", str(path)]) == 0
    assert f"generator: {name}" in capsys.readouterr().out
    out = tmp_path / "swapped"
    assert main(["swap", str(path), "--encoder", str(other_encoder), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"generator: {name}" in shown and str(other_encoder) in shown
    swapped = load_generator(out, "cpu")
    assert type(swapped) is KINDS[kind][1]
    assert swapped.lm.condition_provider.conditioners["description"].output_proj.in_features == 48
    wav_path = tmp_path / "clip.wav"
    assert main(["generate", str(out), "rain", "-o", str(wav_path), "--seed", "1", "-q"]) == 0
    wav, rate = audio_read(wav_path)
    assert rate == swapped.sample_rate
    if kind == "magnet":  # its own defaults: the whole 2 s segment, cut to whole spans of 3 frames
        assert wav.shape[-1] == int(2 * swapped.frame_rate) // 3 * 3 * (swapped.sample_rate // swapped.frame_rate)
    else:  # the CLI's 5 s, past AudioGen's 3 s window by its own 2 s stride
        assert wav.shape[-1] == 5 * rate


def test_cli_settings_reach_the_generator(folder, tmp_path, monkeypatch):
    """`generate` passes MAGNeT only the flags given (its defaults otherwise); --extend-stride is refused there."""
    kind, path = folder
    seen = {}
    cls = KINDS[kind][1]
    original = cls.set_generation_params

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "set_generation_params", spy)
    assert main(["generate", str(path), "wind", "-o", str(tmp_path / "a.wav"), "--seed", "0", "-q", "--top-k", "7",
                 "--duration", "1"]) == 0
    if kind == "magnet":
        assert seen == {"use_sampling": True, "duration": 1.0, "top_k": 7, "top_p": 0.0}
        assert main(["generate", str(path), "wind", "-o", str(tmp_path / "b.wav"), "--extend-stride", "1"]) == 2
    else:
        assert seen["top_k"] == 7 and seen["duration"] == 1.0 and seen["cfg_coef"] == 3.0


CAPTIONS = [f"{what} {where}" for what in ("rain", "a dog barking", "a car passing", "wind", "footsteps", "a door")
            for where in ("at night", "in a city", "far away", "close by")]  # 24: compare-encoders wants ~20


def test_align_and_compare_encoders(folder, other_encoder, tmp_path):
    kind, path = folder
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(CAPTIONS) + "\n")
    out = tmp_path / "aligned"
    assert main(["align", str(path), "--student", str(other_encoder), "-o", str(out), "--captions", str(captions),
                 "--steps", "2", "--batch-size", "4", "--holdout", "2", "-q", "--code-steps", "6"]) == 0
    aligned = load_generator(out, "cpu")
    assert type(aligned) is KINDS[kind][1]
    report = tmp_path / "compare.json"
    assert main(["compare-encoders", str(path), str(out), "--captions", str(captions), "--code-steps", "6",
                 "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["rows"]
    assert len(rows) == 1 and all(isinstance(rows[0][key], float) for key in ("cka", "kl", "top1"))


def test_bfloat16(folder):
    """`dtype=` as MusicGen's: the LM and its encoder in bfloat16 (restricted attention too), sampling in float32."""
    kind, path = folder
    model = load_generator(path, "cpu", dtype="bf16")
    assert type(model) is KINDS[kind][1] and next(model.lm.parameters()).dtype == torch.bfloat16
    tokens = _tokens(model)
    assert tokens.shape[:2] == (2, 4) and (tokens < model.lm.card).all()


def test_compile_step_is_refused_by_magnet_only(folder, monkeypatch):
    from audiocraft_patched.models import lm as lm_module

    kind, path = folder
    model = load_generator(path, "cpu")
    monkeypatch.setattr(lm_module, "compiler_note", lambda: "no C++ compiler (test)")  # no compiling here
    if kind == "magnet":
        with pytest.raises(NotImplementedError, match="MAGNeT has none"):
            model.compile_step()
        assert model.compile_step(False) is False
    else:
        with pytest.warns(RuntimeWarning, match="stays eager"):
            assert model.compile_step() is False
