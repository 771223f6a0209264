"""Tiny upstream models for the parity tests: built by upstream's own builders, exported in its format.

Two kinds of source config: upstream's solver configs composed by hydra from the config tree of
its sdist (`compose`, as a real training run's `xp.cfg`; skipped without the sdist, failed on CI),
and plain dicts in upstream's shape (`build_dict_export`, `audiocraft_patched.utils.tiny`'s
configs). Also the identity demucs stand-in that upstream's chroma conditioner imports, and the
same-tokens / same-audio check the parity tests share. Needs upstream: `tests/upstream.py`.
"""
from __future__ import annotations

import contextlib
import copy
import os
import sys
import types
from pathlib import Path
from typing import Iterator, Sequence

import pytest
import torch

from audiocraft_patched.utils.tiny import randomize_weights, save_export

sys.path.insert(0, str(Path(__file__).parent / "upstream_suite"))
import runner  # noqa: E402

# Small sizes; everything else is the solver's.
TINY_LM = ["transformer_lm.dim=32", "transformer_lm.num_heads=2", "transformer_lm.num_layers=2",
           "transformer_lm.card=64"]
# Each solver's codec solver (the codec its released models were trained with).
CODEC_SOLVER = {"audiogen/audiogen_base_16khz": "compression/encodec_audiogen_16khz",
                "magnet/audio_magnet_16khz": "compression/encodec_audiogen_16khz",
                "magnet/magnet_32khz": "compression/encodec_musicgen_32khz"}


def tiny_codec(ratios: Sequence[int] = (8, 5, 4, 4)) -> list[str]:
    """Overrides for a tiny EnCodec solver config; hop 640 (the default): 25 frames/s at 16 kHz, 50 at 32 kHz."""
    return ["seanet.dimension=16", "seanet.n_filters=4", f"seanet.ratios=[{','.join(map(str, ratios))}]",
            "rvq.bins=64", "rvq.n_q=4"]


def sdist_tree(need: str) -> Path:
    """Upstream's unpacked sdist; the test is skipped without it, and fails on CI (which must have `need`)."""
    try:
        return runner.sdist_tree()
    except runner.SuiteError as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs upstream's sdist ({need}): {err}")
        pytest.skip(f"upstream sdist unavailable: {err}")


def compose(solver: str, overrides: Sequence[str] = ()):
    """`solver=...` composed by hydra from upstream's sdist config tree, as a training run's xp.cfg."""
    from hydra import compose as hydra_compose, initialize_config_dir

    tree = sdist_tree("its config tree")
    with initialize_config_dir(config_dir=str(tree / "config"), version_base="1.1"):
        return hydra_compose(config_name="config", overrides=[f"solver={solver}", *overrides])


def export(path: Path, state: dict, cfg) -> Path:
    """upstream's `utils/export.py` format: the config as unresolved YAML (`???`, `${oc.env:...}` kept)."""
    from omegaconf import OmegaConf

    torch.save({"best_state": state, "xp.cfg": OmegaConf.to_yaml(cfg), "version": "1.3.0", "exported": True}, path)
    return path


def build(solver: str, overrides: Sequence[str], seed: int = 0):
    """(upstream's LM or codec built from the composed `solver`, in eval mode; the composed config)."""
    from audiocraft.models import builders

    cfg = compose(solver, overrides)
    built = copy.deepcopy(cfg)
    built.device = "cpu"  # what upstream's loaders set; the composed value (cuda) stays in the file
    torch.manual_seed(seed)
    make = builders.get_compression_model if solver.startswith("compression/") else builders.get_lm_model
    return make(built).eval(), cfg


def build_upstream_export(folder: Path, solver: str, segment_duration: float, seed: int = 0) -> Path:
    """Upstream's LM (`solver`) and codec (its `CODEC_SOLVER`), composed, built, randomised, exported to `folder`."""
    lm, lm_cfg = build(solver, [*TINY_LM, f"dataset.segment_duration={segment_duration}"], seed)
    codec, codec_cfg = build(CODEC_SOLVER[solver], tiny_codec(), seed)
    randomize_weights(lm, codec, seed)
    export(folder / "state_dict.bin", lm.state_dict(), lm_cfg)
    export(folder / "compression_state_dict.bin", codec.state_dict(), codec_cfg)
    return folder


def build_dict_export(folder: Path, lm_cfg: dict, codec_cfg: dict, seed: int = 0) -> Path:
    """Upstream's LM and codec built from config dicts in its shape, randomised, exported to `folder`."""
    from omegaconf import OmegaConf
    from audiocraft.models import builders

    torch.manual_seed(seed)
    lm = builders.get_lm_model(OmegaConf.create(copy.deepcopy(lm_cfg)))
    codec = builders.get_compression_model(OmegaConf.create(copy.deepcopy(codec_cfg)))
    randomize_weights(lm, codec, seed)
    save_export(folder / "state_dict.bin", lm.state_dict(), lm_cfg)
    save_export(folder / "compression_state_dict.bin", codec.state_dict(), codec_cfg)
    return folder


def _identity_demucs(sample_rate: int) -> dict[str, types.ModuleType]:
    """A demucs whose 'separation' puts the whole mix in the vocals stem (the full-mix path, for upstream)."""

    class Separator(torch.nn.Module):
        sources = ["drums", "bass", "other", "vocals"]
        samplerate = sample_rate
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


@contextlib.contextmanager
def identity_demucs(sample_rate: int = 32000) -> Iterator[None]:
    """The identity demucs in sys.modules for upstream's chroma conditioner; what was there before, after."""
    stand_in = _identity_demucs(sample_rate)
    saved = {name: sys.modules.get(name) for name in stand_in}
    sys.modules.update(stand_in)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def assert_same_generation(up, ours, texts: Sequence[str | None], seed: int) -> torch.Tensor:
    """Both generate `texts` from the same seed: equal tokens, audio within 1e-5. Returns the tokens."""
    torch.manual_seed(seed)
    up_wav, up_tokens = up.generate(texts, return_tokens=True)
    torch.manual_seed(seed)
    wav, tokens = ours.generate(texts, return_tokens=True)
    assert torch.equal(tokens, up_tokens)
    torch.testing.assert_close(wav, up_wav, atol=1e-5, rtol=0)
    return tokens


def write_back(ours, folder: Path, dest: Path) -> Path:
    """Our loaded model's LM, written by our checkpoint writer, beside `folder`'s codec file, in `dest`."""
    from audiocraft_patched.utils.export import copy_file, save_checkpoint

    save_checkpoint(dest / "state_dict.bin", ours.lm.state_dict(), ours.lm.cfg)
    copy_file(folder / "compression_state_dict.bin", dest / "compression_state_dict.bin")
    return dest
