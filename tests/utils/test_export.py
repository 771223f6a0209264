"""utils/export.py: atomic writes that never overwrite unless told; checkpoint configs from the modules."""
import os

import pytest
import torch
from omegaconf import OmegaConf

from audiocraft_patched.models.builders import get_debug_lm_model
from audiocraft_patched.models.loaders import load_checkpoint
from audiocraft_patched.utils import export


def test_atomic_write_refuses_to_overwrite_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    export.write_text(target, "one")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.write_text(target, "two")
    assert target.read_text() == "one"
    export.write_text(target, "two", overwrite=True)
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_a_failing_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "state.pt"
    export.save_torch({"x": 1}, target)

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        export.atomic_write(target, broken, overwrite=True)
    assert torch.load(target, weights_only=True) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]
    with pytest.raises(IsADirectoryError):
        export.write_text(tmp_path, "x", overwrite=True)


def test_copy_file(tmp_path):
    source = export.write_text(tmp_path / "a", "abc")
    export.copy_file(source, tmp_path / "b")
    assert (tmp_path / "b").read_text() == "abc"
    assert export.copy_file(source, source) == source  # the same file: nothing to do
    with pytest.raises(FileExistsError):
        export.copy_file(source, tmp_path / "b")


def test_export_lm_takes_conditioners_and_fuser_from_the_modules(tmp_path):
    lm = get_debug_lm_model()
    lm.fuser.add("extra", "prepend")
    stale = {"conditioners": {"description": {"model": "t5", "t5": {"name": "t5-base"}}},
             "fuser": {"cross": [], "prepend": [], "sum": [], "input_interpolate": []},
             "dataset": {"segment_duration": 30, "copy": "${dataset.segment_duration}"}}
    path = export.export_lm(tmp_path, lm, stale)
    pkg = load_checkpoint(path)
    cfg = OmegaConf.create(pkg["xp.cfg"])
    assert OmegaConf.to_container(cfg.conditioners) == {"description": lm.condition_provider.conditioners[
        "description"].config()}
    assert list(cfg.fuser.cross) == ["description"] and list(cfg.fuser.prepend) == ["extra"]
    assert pkg["xp.cfg"].count("${dataset.segment_duration}") == 1  # other keys kept as written
    assert pkg["exported"] and set(pkg["best_state"]) == set(lm.state_dict())
    assert all(torch.equal(pkg["best_state"][k], v) for k, v in lm.state_dict().items())
    with pytest.raises(FileExistsError):
        export.export_lm(tmp_path, lm, stale)


def test_a_view_is_saved_without_its_whole_storage(tmp_path):
    big = torch.arange(1000.0)
    path = export.save_checkpoint(tmp_path / "c.bin", {"w": big[:10]}, {})
    assert os.path.getsize(path) < 3000 and torch.equal(load_checkpoint(path)["best_state"]["w"], big[:10])


@pytest.mark.upstream
def test_a_re_exported_t5_model_stays_loadable_by_upstream(tiny_musicgen_dir, tmp_path):
    """An unswapped T5 conditioner writes upstream's `model: t5` entry, so plain upstream reads our export."""
    from audiocraft.models import MusicGen as UpstreamMusicGen

    from audiocraft_patched.models import MusicGen

    ours = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")
    cond = ours.lm.condition_provider.conditioners["description"]
    assert cond.config()["model"] == "t5"
    export.export_lm(tmp_path, ours.lm, ours.lm.cfg)
    export.copy_file(tiny_musicgen_dir / "compression_state_dict.bin", tmp_path / "compression_state_dict.bin")
    up = UpstreamMusicGen.get_pretrained(str(tmp_path), device="cpu")
    for model in (up, ours):
        model.set_generation_params(duration=0.3, top_k=10)
    torch.manual_seed(5)
    _, up_tokens = up.generate(["calm piano", "fast drums"], return_tokens=True)
    torch.manual_seed(5)
    _, tokens = ours.generate(["calm piano", "fast drums"], return_tokens=True)
    assert torch.equal(tokens, up_tokens)


def test_copy_folder_copies_every_file_and_refuses_to_overwrite(tmp_path):
    export.write_text(tmp_path / "src" / "config.json", "{}")
    export.write_text(tmp_path / "src" / "sub" / "spiece.model", "x")
    export.copy_folder(tmp_path / "src", tmp_path / "dst")
    assert sorted(str(p.relative_to(tmp_path / "dst")) for p in (tmp_path / "dst").rglob("*") if p.is_file()) == [
        "config.json", "sub/spiece.model"]
    with pytest.raises(FileExistsError):
        export.copy_folder(tmp_path / "src", tmp_path / "dst")
    export.copy_folder(tmp_path / "src", tmp_path / "dst", overwrite=True)
