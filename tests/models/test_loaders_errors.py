"""Damaged checkpoints get errors naming what is wrong (issue 16, items 9 and 13), and `lm.cfg` reads as upstream's."""
import shutil

import pytest
import torch

from audiocraft_patched.models import MusicGen, loaders
from audiocraft_patched.models.loaders import CheckpointError

PROJ = "condition_provider.conditioners.description.output_proj.weight"


@pytest.fixture
def damaged(tiny_musicgen_dir, tmp_path):
    """A copy of the tiny checkpoint and a function that rewrites its LM file: edit(pkg) changes it in place."""
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_musicgen_dir, folder)

    def rewrite(edit):
        pkg = torch.load(folder / "state_dict.bin", weights_only=True)
        edit(pkg)
        torch.save(pkg, folder / "state_dict.bin")
        return folder
    return rewrite


def yaml_edit(old: str, new: str):
    def edit(pkg):
        assert old in pkg["xp.cfg"]
        pkg["xp.cfg"] = pkg["xp.cfg"].replace(old, new)
    return edit


def test_missing_extra_and_misshapen_keys_are_named(damaged):
    def edit(pkg):
        state = pkg["best_state"]
        for key in [k for k in state if k.startswith("transformer.layers.1.")][:7]:
            del state[key]
        state["extra.weight"] = torch.zeros(2)
        state["linears.2.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError) as err:
        loaders.load_lm_model(damaged(edit))
    message = str(err.value)
    assert "7 missing key(s): transformer.layers.1." in message and "(and 2 more)" in message
    assert "1 unexpected key(s): extra.weight" in message
    assert "1 wrong shape(s): linears.2.weight (3, 3) (the config makes (64, 32))" in message


def test_config_that_does_not_describe_the_weights_is_refused_before_building(damaged, monkeypatch):
    from audiocraft_patched.models import builders

    monkeypatch.setattr(builders, "get_lm_model", lambda *a, **k: pytest.fail("built before checking"))
    for old, new, expected in [("num_layers: 2", "num_layers: 3", "num_layers is 3, but the weights hold 2"),
                               ("  dim: 32", "  dim: 48", r"emb\.0\.weight is \(65, 32\), but .* makes it \(65, 48\)"),
                               ("n_q: 4", "n_q: 5", "n_q is 5, but the weights hold 4 codebook embeddings"),
                               ("card: 64", "card: -1", "card must be a positive integer, got -1")]:
        with pytest.raises(CheckpointError, match=expected):
            loaders.load_lm_model(damaged(yaml_edit(old, new)))
        damaged(yaml_edit(new, old))


def test_bad_yaml_and_unknown_conditioner(damaged):
    saved = {}
    damaged(lambda pkg: saved.update(pkg))
    with pytest.raises(CheckpointError, match="xp.cfg is not valid YAML"):
        loaders.load_lm_model(damaged(lambda pkg: pkg.update({"xp.cfg": "a: [1, 2\nb: }"})))
    with pytest.raises(CheckpointError, match="expected a mapping"):
        loaders.load_lm_model(damaged(lambda pkg: pkg.update({"xp.cfg": "- 1\n- 2\n"})))
    unknown = saved["xp.cfg"].replace("model: t5", "model: wordpiece")
    with pytest.raises(CheckpointError, match="'wordpiece', which audiocraft_patched does not know; known:"):
        loaders.load_lm_model(damaged(lambda pkg: pkg.update({"xp.cfg": unknown})))


def test_wrong_width_output_proj_states_both_widths(damaged, tiny_musicgen_dir):
    original = torch.load(tiny_musicgen_dir / "state_dict.bin", weights_only=True)["best_state"][PROJ]
    assert original.shape == (32, 768)
    with pytest.raises(CheckpointError, match="maps a 128-wide encoder to the LM, but the chosen encoder is 768 wide"):
        loaders.load_lm_model(damaged(lambda pkg: pkg["best_state"].update({PROJ: torch.zeros(32, 128)})))
    with pytest.raises(CheckpointError, match="projects to 16 features, but the LM is 32 wide"):
        loaders.load_lm_model(damaged(lambda pkg: pkg["best_state"].update({PROJ: torch.zeros(16, 768)})))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(damaged, value):
    def edit(pkg):
        pkg["best_state"]["linears.1.weight"][3, 5] = value
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) hold NaN or infinite values: linears\.1\.weight"):
        MusicGen.get_pretrained(str(damaged(edit)))


def test_lm_cfg_reads_by_attribute_and_by_item(tiny_musicgen_dir):
    from omegaconf import DictConfig

    cfg = MusicGen.get_pretrained(str(tiny_musicgen_dir)).lm.cfg
    assert isinstance(cfg, DictConfig)
    assert cfg.dataset.segment_duration == cfg["dataset"]["segment_duration"] == 18.5
    assert cfg.transformer_lm.dim == 32 and cfg.conditioners.description.model == "t5"
    assert cfg.get("nope") is None
