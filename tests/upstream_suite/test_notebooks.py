"""Upstream 1.3.0's demo notebooks (from its sdist, fetched at test time) run against audiocraft_patched.

Each notebook's code cells run in order, in one namespace, as a notebook would, with
`audiocraft` imports rewritten to `audiocraft_patched` and only these substitutions (each listed
with its reason in SUBSTITUTIONS): tiny local models for the hub names, CPU for "cuda",
durations of a second, a WAV file of ours for the mp3 assets, our `audio_read` for
`torchaudio.load`. Every `display_audio` call is recorded and its players checked. The AudioGen
and MAGNeT checkpoints are built by upstream's own builders (`tests/upstream_models.py`).
"""
from __future__ import annotations

import copy
import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import runner  # noqa: E402
from upstream_models import build_upstream_export, sdist_tree  # noqa: E402

from audiocraft_patched.data.audio import audio_read, audio_write  # noqa: E402
from audiocraft_patched.utils import notebook  # noqa: E402

# Substitutions: (text in the notebook, replacement, why). `{...}` fields are filled per run.
COMMON = [
    ("import torchaudio\n", "", "torchaudio is not a dependency: `torchaudio.load` is our `audio_read`, WAV only"),
    ('device="cuda"', 'device="cpu"', "tests run on CPU"),
]
SUBSTITUTIONS = {
    "musicgen_demo.ipynb": COMMON + [
        ("from audiocraft_patched.models import MultiBandDiffusion\n", "",
         "MultiBandDiffusion is not supported (its import error is checked below); the notebook only uses it "
         "when USE_DIFFUSION_DECODER = True"),
        ("'facebook/musicgen-small'", "{musicgen}", "a tiny random MusicGen (no hub access in tests)"),
        ("'facebook/musicgen-melody'", "{melody}", "a tiny random MusicGen-melody"),
        ("duration=30", "duration=1", "one second keeps the test fast"),
        ("model.set_generation_params(duration=8)",
         "model.lm.condition_provider.conditioners['self_wav'].stems = 'full_mix'\n"
         "model.set_generation_params(duration=1)",
         "one second; chroma of the full mix, as demucs (the stem separator) is not installed in tests"),
        ('"../assets/bach.mp3"', "{wav}", "we read WAV only: a WAV file of ours"),
    ],
    "audiogen_demo.ipynb": COMMON + [
        ("'facebook/audiogen-medium'", "{audiogen}", "a tiny random AudioGen"),
        ("duration=5", "duration=1", "one second keeps the test fast"),
        ('"../assets/sirens_and_a_humming_engine_approach_and_pass.mp3"', "{wav}",
         "we read WAV only: a WAV file of ours"),
    ],
    "magnet_demo.ipynb": [
        ("'facebook/magnet-small-10secs'", "{magnet}", "a tiny random MAGNeT (2 s segments)"),
        ("'facebook/audio-magnet-small'", "{audio_magnet}", "a tiny random audio MAGNeT (2 s segments)"),
    ],
}


def code_cells(tree: Path, name: str) -> list[str]:
    cells = json.loads((tree / "demos" / name).read_text(encoding="utf-8"))["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]


def prepared_source(tree: Path, name: str, fields: dict[str, str]) -> str:
    """The notebook's code, imports rewritten, substitutions applied (each must match exactly)."""
    source = runner.rewrite_imports("\n\n".join(code_cells(tree, name)))
    for old, new, _why in SUBSTITUTIONS[name]:
        assert old in source, f"{name} no longer holds {old!r}: update SUBSTITUTIONS"
        source = source.replace(old, new.format(**fields))
    return source


@pytest.fixture(scope="module")
def sdist() -> Path:
    return sdist_tree("its notebooks")


@pytest.fixture(scope="module")
def tiny_melody_dir(tiny_t5_dir, tmp_path_factory) -> Path:
    """A tiny random MusicGen-melody export (chroma prepended, text by cross-attention), 32 kHz."""
    from audiocraft_patched.models.builders import get_compression_model, get_lm_model
    from audiocraft_patched.utils.tiny import randomize_weights, save_export, tiny_encodec_config, tiny_musicgen_config

    cfg = tiny_musicgen_config("t5-base", sample_rate=32000, segment_duration=18.5)
    cfg["conditioners"]["self_wav"] = {"model": "chroma_stem", "chroma_stem": {
        "sample_rate": 32000, "n_chroma": 12, "radix2_exp": 14, "argmax": True, "match_len_on_eval": False,
        "eval_wavs": None, "n_eval_wavs": 100, "cache_path": None}}
    cfg["fuser"]["prepend"] = ["self_wav"]
    codec_cfg = tiny_encodec_config(32000, 1, n_q=4, card=cfg["transformer_lm"]["card"], ratios=(8, 5, 4, 8))
    torch.manual_seed(0)
    lm, codec = get_lm_model(copy.deepcopy(cfg)), get_compression_model(copy.deepcopy(codec_cfg))
    randomize_weights(lm, codec, 0)
    folder = tmp_path_factory.mktemp("tiny-melody")
    save_export(folder / "state_dict.bin", lm.state_dict(), cfg)
    save_export(folder / "compression_state_dict.bin", codec.state_dict(), codec_cfg)
    return folder


def test_multiband_diffusion_import_says_not_supported():
    with pytest.raises(ImportError, match="MultiBandDiffusion is not supported"):
        from audiocraft_patched.models import MultiBandDiffusion  # noqa: F401


def test_display_audio_players():
    wav = torch.sin(torch.arange(800) / 5.0).view(1, 1, -1).repeat(2, 2, 1) * 0.25
    players = notebook.display_audio(wav, 16000)
    assert len(players) == 2
    data = players[0].wav_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert len(data) == 44 + 800 * 2 * 2  # header + frames x channels x 16 bits
    assert "data:audio/wav;base64," in players[1]._repr_html_()
    with pytest.raises(AssertionError):
        notebook.display_audio(wav[0, 0], 16000)  # upstream asserts [B, C, T] or [C, T]


def run_notebook(tree: Path, name: str, fields: dict[str, str], monkeypatch) -> tuple[dict, list]:
    """Run the notebook's prepared code; returns its namespace and (shape, rate) of each player shown."""
    source = prepared_source(tree, name, fields)
    shown: list[tuple[tuple[int, ...], int]] = []
    display_audio = notebook.display_audio

    def recording_display_audio(samples, sample_rate):
        players = display_audio(samples, sample_rate)
        shown.extend((tuple(p.wav.shape), p.sample_rate) for p in players)
        return players

    monkeypatch.setattr(notebook, "display_audio", recording_display_audio)
    torch.manual_seed(0)
    namespace = {"__name__": "__notebook__", "torchaudio": types.SimpleNamespace(load=audio_read)}
    exec(compile(source, name, "exec"), namespace)
    return namespace, shown


def half_second_wav(folder: Path, sample_rate: int) -> str:
    """A WAV file standing in for the notebooks' mp3 assets (they keep up to 2 s of it as a prompt)."""
    t = torch.arange(sample_rate // 2) / sample_rate
    audio_write(folder / "asset", (0.3 * torch.sin(2 * math.pi * 220 * t))[None], sample_rate, strategy="clip")
    return repr(str(folder / "asset.wav"))


def test_musicgen_demo_runs(sdist, tiny_musicgen_dir, tiny_melody_dir, tmp_path, monkeypatch):
    fields = {"musicgen": repr(str(tiny_musicgen_dir)), "melody": repr(str(tiny_melody_dir)),
              "wav": half_second_wav(tmp_path, 32000)}
    namespace, shown = run_notebook(sdist, "musicgen_demo.ipynb", fields, monkeypatch)
    # Tiny models at 16 kHz (musicgen) and 32 kHz (melody), 1 s each: continuation x2, file
    # continuation, text, melody x2.
    assert shown == [((1, 16000), 32000)] * 2 + [((1, 16000), 32000)] * 2 + [((1, 32000), 32000)] * 2
    output = namespace["output"]
    assert isinstance(output, tuple) and output[1].shape == (2, 4, 25)  # return_tokens=True: (wav, tokens)


@pytest.fixture(scope="module")
def upstream_exports(tiny_t5_dir, tmp_path_factory):
    """Tiny random AudioGen / MAGNeT exports, built by upstream's builders from its composed solver configs."""
    from conftest import put_in_hf_cache

    from audiocraft_patched.utils.tiny import make_tiny_t5


    put_in_hf_cache("t5-large", lambda f: make_tiny_t5(f, d_model=1024, num_heads=2, d_kv=8, d_ff=32))
    solvers = {"audiogen": ("audiogen/audiogen_base_16khz", 3), "magnet": ("magnet/magnet_32khz", 2),
               "audio_magnet": ("magnet/audio_magnet_16khz", 2)}
    return {key: repr(str(build_upstream_export(tmp_path_factory.mktemp(key), solver, seconds)))
            for key, (solver, seconds) in solvers.items()}


@pytest.mark.upstream
def test_audiogen_demo_runs(sdist, upstream_exports, tmp_path, monkeypatch):
    fields = {"audiogen": upstream_exports["audiogen"], "wav": half_second_wav(tmp_path, 16000)}
    _, shown = run_notebook(sdist, "audiogen_demo.ipynb", fields, monkeypatch)
    # continuation x2, file continuation, text x2: 1 s at 16 kHz each
    assert shown == [((1, 16000), 16000)] * 5


@pytest.mark.upstream
def test_magnet_demo_runs(sdist, upstream_exports, monkeypatch):
    fields = {"magnet": upstream_exports["magnet"], "audio_magnet": upstream_exports["audio_magnet"]}
    namespace, shown = run_notebook(sdist, "magnet_demo.ipynb", fields, monkeypatch)
    # 3 variations of a 2 s segment, music at 32 kHz, then audio at 16 kHz; decoding steps from
    # `model.lm.cfg.dataset.segment_duration` (2 s): int(20 * 2 // 10) = 4 for the first codebook.
    assert shown == [((1, 64000), 32000)] * 3 + [((1, 32000), 16000)] * 3
    assert namespace["model"].generation_params["decoding_steps"] == [4, 10, 10, 10]
