"""The embedding cache's folder as hostile ground: read-only, bad entries, bounded size (issue 16, items 11-12)."""
import errno
import os
import tempfile
import time
import warnings

import pytest
import torch

from audiocraft_patched.modules.conditioners.cache import TextEmbeddingCache


def entry(seed: int, batch: int = 2, length: int = 5, dim: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    states = torch.randn(batch, length, dim, generator=torch.Generator().manual_seed(seed))
    return states, torch.ones(batch, length, dtype=torch.long)


def fresh(directory, **kwargs) -> TextEmbeddingCache:
    """A new cache on the same folder, as in a new process: nothing in memory."""
    return TextEmbeddingCache(directory=directory, **kwargs)


def test_read_only_folder_degrades_to_memory_with_one_warning(tmp_path, monkeypatch):
    seeded = fresh(tmp_path)
    seeded.put("k0", *entry(0))  # written before the folder turned read-only: still read

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # what the atomic writer makes its file with
    cache = fresh(tmp_path)
    with pytest.warns(UserWarning, match="cannot write to .*Read-only file system.*memory only") as caught:
        for i in range(1, 4):
            cache.put(f"k{i}", *entry(i))
    assert len(caught) == 1 and not cache.writable
    assert torch.equal(cache.get("k2", "cpu")[0], entry(2)[0])
    assert torch.equal(cache.get("k0", "cpu")[0], entry(0)[0])  # the disk entry is a hit
    assert cache.hits == 2 and sorted(p.name for p in tmp_path.rglob("*.pt")) == ["k0.pt"]


def test_folder_that_cannot_be_created_is_memory_only(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.warns(UserWarning, match="memory only"):
        cache = fresh(tmp_path / "file" / "cache")
    cache.put("k", *entry(0))
    assert cache.directory is None and torch.equal(cache.get("k", "cpu")[1], entry(0)[1])


@pytest.mark.parametrize("damage", [
    lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),  # truncated
    lambda path: torch.save({"format": 1, "key": path.stem, "states": "x", "mask": None}, path),  # wrong types
    lambda path: torch.save({"format": 1, "key": path.stem, "states": torch.zeros(2, 5), "mask": torch.ones(2, 5)},
                            path),  # wrong rank
    lambda path: torch.save({"format": 1, "key": path.stem, "states": torch.zeros(2, 5, 4),
                             "mask": torch.ones(3, 5, dtype=torch.long)}, path),  # shapes disagree
    lambda path: torch.save([1, 2], path),  # not a dict
], ids=["truncated", "types", "rank", "shapes", "list"])
def test_bad_entry_is_a_miss_and_is_rewritten(tmp_path, damage):
    fresh(tmp_path).put("key", *entry(0))
    damage(next(tmp_path.rglob("key.pt")))
    cache = fresh(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # quietly a miss
        assert cache.get("key", "cpu") is None
    cache.put("key", *entry(0))  # the caller computed it again
    again = fresh(tmp_path)
    assert torch.equal(again.get("key", "cpu")[0], entry(0)[0]) and again.hits == 1


def test_disk_size_limit_evicts_least_recently_used(tmp_path):
    size = len(_saved_bytes(tmp_path / "probe"))
    limit = int(3.5 * size)
    cache = fresh(tmp_path / "c", max_disk_bytes=limit)
    for i in range(3):
        cache.put(f"k{i}", *entry(i))
    files = {p.stem: p for p in (tmp_path / "c").rglob("*.pt")}
    now = time.time()
    for age, name in enumerate(["k2", "k1", "k0"]):  # k0 the oldest
        os.utime(files[name], (now - 100 * (age + 1),) * 2)
    assert fresh(tmp_path / "c").get("k0", "cpu") is not None  # a hit makes it the most recent
    cache.put("k3", *entry(3))  # 4 files > 3.5: evict down to 90% of the budget
    left = sorted(p.stem for p in (tmp_path / "c").rglob("*.pt"))
    assert left == ["k0", "k2", "k3"]
    assert sum(p.stat().st_size for p in (tmp_path / "c").rglob("*.pt")) <= limit
    with pytest.raises(ValueError, match="must be positive"):
        fresh(tmp_path, max_disk_bytes=0)


def _saved_bytes(directory) -> bytes:
    cache = fresh(directory)
    cache.put("probe", *entry(0))
    return next(directory.rglob("probe.pt")).read_bytes()
