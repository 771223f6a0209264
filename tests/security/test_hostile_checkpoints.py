"""Hostile checkpoint folders, built here (issue 16, items 4-6 and its `tests/security/` proof).

Each is refused (or defused) fast, with flat memory, without the network (every socket connect
fails the test) and without writing outside its temp folder: env resolvers, filesystem settings,
absurd sizes, planted pickles, symlinks and non-regular files.
"""
import os
import shutil
import socket
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from audiocraft_patched.models import MusicGen, loaders
from audiocraft_patched.models.loaders import CheckpointError

SECRET = "s3cr3t-value-that-must-not-leak"
MAX_SECONDS = 3.0  # generous: the machine is shared; a refusal takes milliseconds
MAX_GROWTH_MB = 100  # the unfixed loader grew ~120 MB/s on num_layers: 100000000


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


@contextmanager
def fast_and_flat():
    """The block runs in MAX_SECONDS with peak resident memory growing by less than MAX_GROWTH_MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    except OSError:
        pytest.skip("needs Linux's /proc/self/clear_refs to measure peak memory")
    before, start = _status_kb("VmRSS"), time.perf_counter()
    yield
    elapsed, growth = time.perf_counter() - start, (_status_kb("VmHWM") - before) / 1024
    assert elapsed < MAX_SECONDS, f"took {elapsed:.2f} s"
    assert growth < MAX_GROWTH_MB, f"peak memory grew by {growth:.0f} MB"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        pytest.fail(f"network access attempted: {args[1:] if len(args) > 1 else args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("ACP_SECRET", SECRET)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def hostile(tiny_musicgen_dir, tmp_path):
    """(folder, edit): a copy of the tiny checkpoint; edit(old, new) rewrites its LM config text."""
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_musicgen_dir, folder)
    MusicGen.get_pretrained(str(folder))  # imports and caches warm before any measurement

    def edit(old: str, new: str, file: str = loaders.LM_FILE) -> Path:
        pkg = torch.load(folder / file, weights_only=True)
        assert old in pkg["xp.cfg"], old
        pkg["xp.cfg"] = pkg["xp.cfg"].replace(old, new, 1)
        torch.save(pkg, folder / file)
        return folder
    return folder, edit


def refused(folder: Path, match: str) -> str:
    with fast_and_flat(), pytest.raises(CheckpointError, match=match) as err:
        MusicGen.get_pretrained(str(folder))
    return str(err.value)


# -- item 4: no resolver runs -------------------------------------------------------------------
@pytest.mark.parametrize("value", ["${oc.env:ACP_SECRET}", "x-${oc.env:ACP_SECRET}", "${ oc.env : ACP_SECRET }",
                                   "${oc.decode:${oc.env:ACP_SECRET}}", "${dora.dir}", "${planted:1}"])
def test_resolvers_in_keys_builders_read_are_refused_unevaluated(hostile, value):
    from omegaconf import OmegaConf

    calls = []
    OmegaConf.register_new_resolver("planted", lambda *a: calls.append(a) or "t5-base", replace=True)
    folder, edit = hostile
    edit("name: t5-base", f"name: '{value}'")
    edit("sample_rate:", "dora:\n  dir: /x/${oc.env:ACP_SECRET}\nsample_rate:")
    message = refused(folder, "calls the resolver '(oc.env|oc.decode|planted)'.*resolvers are never run")
    assert SECRET not in message and not calls


def test_resolvers_elsewhere_load_and_stay_unevaluated(hostile):
    from omegaconf import OmegaConf

    calls = []
    OmegaConf.register_new_resolver("planted", lambda *a: calls.append(a) or "boom", replace=True)
    folder, edit = hostile
    edit("sample_rate:", "dora:\n  dir: /x/${oc.env:ACP_SECRET}\n  other: ${planted:1}\n"
                         "datasource:\n  train: ???\nsample_rate:")
    with fast_and_flat():
        cfg = MusicGen.get_pretrained(str(folder)).lm.cfg
    assert cfg.dora.dir == "/x/${oc.env:ACP_SECRET}" and cfg.dora.other == "${planted:1}"
    assert SECRET not in OmegaConf.to_yaml(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    assert not calls


# -- item 5: paths come from the user -----------------------------------------------------------
def test_cache_dir_in_the_checkpoint_is_ignored_with_a_warning(hostile, tmp_path):
    folder, edit = hostile
    outside = tmp_path / "elsewhere" / "cache"
    edit("normalize_text: false", f"normalize_text: false\n      cache_dir: {outside}")
    with pytest.warns(UserWarning, match="ignored conditioners.description.t5.cache_dir"):
        model = MusicGen.get_pretrained(str(folder))
    model.set_generation_params(duration=0.1)
    model.generate(["calm piano"])
    assert not (tmp_path / "elsewhere").exists()
    assert model.lm.condition_provider.conditioners["description"].cache is None


@pytest.mark.parametrize("name, match", [("./../../outside", "leaves the checkpoint folder"),
                                         ("/etc", "not a model folder"), ("/dev/zero", "not a model folder"),
                                         ("~/nonexistent-acp", "not a model folder")])
def test_encoder_paths_outside_the_folder_are_refused(hostile, name, match):
    folder, edit = hostile
    edit("name: t5-base", f"name: {name}")
    refused(folder, match)


# -- item 6 and sizes: refused before anything is built ------------------------------------------
@pytest.mark.parametrize("old, new, match", [
    ("num_layers: 2", "num_layers: 100000000", "num_layers is 100,000,000, but the weights hold 2"),
    ("  dim: 32", "  dim: 1000000000", r"emb\.0\.weight is \(65, 32\)"),
    ("card: 64", "card: 1000000000", r"emb\.0\.weight is \(65, 32\)"),
    ("hidden_scale: 4", "hidden_scale: 100000000", "hidden_scale must be a number in"),
    ("n_q: 4", "n_q: 100000000", "n_q is 100,000,000, but the weights hold 4")])
def test_absurd_lm_sizes_are_refused_before_building(hostile, old, new, match):
    folder, edit = hostile
    refused(edit(old, new), match)


@pytest.mark.parametrize("old, new, match", [
    ("n_residual_layers: 1", "n_residual_layers: 100000000", "n_residual_layers is 100000000, which the"),
    ("lstm: 2", "lstm: 100000000", "seanet.lstm is 100000000"),
    ("dimension: 16", "dimension: 1000000000", "wrong shape"),
    ("n_filters: 4", "n_filters: 1000000000", "codec config cannot be built .*overflow"),
    ("- 8\n", "- 100000000\n", r"ratios must be integers in \[1, 4096\]")])
def test_absurd_codec_sizes_are_refused_before_allocating(hostile, old, new, match):
    folder, edit = hostile
    refused(edit(old, new, loaders.COMPRESSION_FILE), match)


def test_huge_sparse_file_huge_config_and_yaml_bombs(hostile):
    folder, edit = hostile
    pkg = torch.load(folder / loaders.LM_FILE, weights_only=True)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(20))
    deep = "x: " + "[" * 90_000 + "]" * 90_000
    indented = "".join(" " * i + f"k{i}:\n" for i in range(0, 600, 2))
    for text, match in [(bomb, "anchors/aliases"), ("x: " + "y" * 300_000, "characters"), (deep, "too deeply"),
                        (indented, "too deeply")]:
        torch.save({**pkg, "xp.cfg": text}, folder / loaders.LM_FILE)
        refused(folder, match)
    (folder / loaders.LM_FILE).unlink()
    with open(folder / loaders.LM_FILE, "wb") as f:
        f.truncate(100 * 2**30)  # 100 GiB, sparse: nothing on disk
    refused(folder, "107,374,182,400 bytes, more than any audiocraft checkpoint")


# -- planted pickles, symlinks, non-regular files -------------------------------------------------
class _Planted:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))  # unpickling would create the file


def test_planted_pickle_never_runs(hostile, tmp_path):
    folder, _ = hostile
    target = tmp_path / "pwned"
    for file in (loaders.LM_FILE, loaders.COMPRESSION_FILE):
        torch.save({"best_state": {}, "xp.cfg": "{}", "payload": _Planted(target)}, folder / file)
        refused(folder, "holds objects other than tensors and plain data")
    assert not target.exists()


def test_symlinks_and_non_regular_files(hostile, tmp_path):
    folder, _ = hostile
    lm_file = folder / loaders.LM_FILE
    outside = tmp_path / "outside.bin"
    shutil.copy(lm_file, outside)  # a valid checkpoint, but not in the folder
    for make, match in [(lambda: lm_file.symlink_to("/dev/zero"), "link leading out of its folder .* /dev/zero"),
                        (lambda: lm_file.symlink_to(outside), "link leading out of its folder"),
                        (lambda: lm_file.symlink_to(lm_file), "cannot be opened"),
                        (lambda: lm_file.mkdir(), "is a folder, not a checkpoint file"),
                        (lambda: os.mkfifo(lm_file), "not a regular file")]:
        if lm_file.is_dir() and not lm_file.is_symlink():
            lm_file.rmdir()
        elif os.path.lexists(lm_file):
            lm_file.unlink()
        make()
        refused(folder, match)
    lm_file.unlink()
    lm_file.symlink_to("/dev/zero")
    with fast_and_flat(), pytest.raises(CheckpointError, match="not a regular file"):
        loaders.load_lm_model(lm_file)  # a file named directly: the user's to place anywhere, but a device is refused
    lm_file.unlink()
    (folder / "inner.bin").write_bytes(outside.read_bytes())
    lm_file.symlink_to("inner.bin")  # a link inside the folder (as in the HF cache's blobs) is fine
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MusicGen.get_pretrained(str(folder))
