"""An embedding cache for text conditioners: encoder outputs by encoder fingerprint, settings and texts.

No upstream counterpart (upstream's `audiocraft/utils/cache.py` caches waveform features for
the chroma conditioner). Encoding the same prompts again (a CLI session, CFG sweeps, evaluation
sets) costs a full encoder pass each time; a hit here costs a dictionary lookup.

Bit-identical with or without the cache, by construction:
- one entry is one whole conditioner batch. The encoder's output for a text depends on the
  padded length of its batch (and, through the matmul kernels, on the batch's shape), and the
  LM attends to zero padding as upstream does; so entries are never assembled from per-text
  pieces, and a hit returns exactly the tensor the same batch produced;
- it stores the encoder's hidden states, before pooling and `output_proj`, which are recomputed
  on every call (so training the projection never reads stale values);
- the key holds the encoder fingerprint (class, config, tokenizer, and a hash of every weight),
  the settings (family, pooling, layer, max_length, template, dtype, device type...) and the
  texts. A changed encoder never hits an old entry: the fingerprint is recomputed when a weight
  tensor is replaced or modified in place (tracked by PyTorch's version counters).

On disk, entries are `torch.save`d tensors read back with `weights_only=True`, written to a
temporary file and renamed into place (atomic), one file per entry, checked on read (a bad entry
is a miss, then rewritten). The folder is bounded (`max_disk_bytes`, 1 GiB by default; least
recently used files go first), and one that cannot be written degrades to memory only.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import torch

from ...data.atomic import atomic_write

CACHE_FORMAT = 1  # bump when the meaning of an entry changes
DEFAULT_MAX_DISK_BYTES = 2**30  # 1 GiB of entry files per cache folder, then least recently used go


def model_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """Parameters and buffers of `model`, the tensors `weights_state` watches."""
    return list(itertools.chain(model.parameters(), model.buffers()))


def weights_state(tensors: list[torch.Tensor]) -> tuple:
    """A cheap summary that changes whenever one of `tensors` is replaced, moved, cast or modified in place.

    In-place updates (optimizer steps, `load_state_dict`, `p.add_()` under no_grad) bump the
    tensor's version counter; replacement changes its storage. Edits through `p.data` bypass the
    counter: call `refresh()` on the conditioner after such surgery.
    """
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


def tokenizer_description(tokenizer) -> str:
    """Everything about a tokenizer that changes token ids: its full definition and padding settings."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        # Each call sets the backend's padding/truncation state: not part of what the tokenizer is.
        definition.pop("padding", None)
        definition.pop("truncation", None)
        vocab = json.dumps(definition, sort_keys=True)
    else:
        vocab = json.dumps(sorted(tokenizer.get_vocab().items()))
    return json.dumps([type(tokenizer).__name__, vocab, tokenizer.padding_side, tokenizer.truncation_side,
                       str(tokenizer.pad_token), str(tokenizer.pad_token_id)])


def encoder_fingerprint(model: torch.nn.Module, tokenizer) -> str:
    """sha256 of the model class, its config, the tokenizer and every weight (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    config = model.config.to_json_string(use_diff=False) if hasattr(model, "config") else ""
    digest.update(json.dumps([CACHE_FORMAT, type(model).__name__, config]).encode())
    digest.update(tokenizer_description(tokenizer).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def cache_key(fingerprint: str, settings: dict, texts: list[str]) -> str:
    """The key of one conditioner batch: sha256 over fingerprint, settings (JSON) and texts."""
    material = json.dumps([CACHE_FORMAT, fingerprint, sorted(settings.items()), texts], ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class TextEmbeddingCache:
    """Bounded LRU of encoder outputs in memory, optionally backed by a bounded folder on disk.

    The cache never fails a call: a folder that cannot be created or written (read-only file
    system, no space, no permission) degrades to memory only with one warning (entries already
    on disk are still read); an entry on disk that cannot be read, or holds anything but a
    [B, T, D] float tensor and a matching [B, T] mask, is a miss and is rewritten.

    Args:
        max_entries: most batches kept in memory.
        max_bytes: most tensor bytes kept in memory (least recently used entries go first).
        directory: folder for the on-disk cache (created if needed); None keeps it in memory only.
        max_disk_bytes: most bytes of entry files in `directory`; past it the least recently used
            files (by modification time, refreshed on every disk hit) are deleted, down to 90%.
    """

    def __init__(self, max_entries: int = 1024, max_bytes: int = 256 * 2**20, directory: str | Path | None = None,
                 max_disk_bytes: int = DEFAULT_MAX_DISK_BYTES):
        if max_entries < 1 or max_bytes < 1 or max_disk_bytes < 1:
            raise ValueError(f"max_entries, max_bytes and max_disk_bytes must be positive, got {max_entries}, "
                             f"{max_bytes} and {max_disk_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_disk_bytes = max_disk_bytes
        self.directory = None if directory is None else Path(directory).expanduser()
        self.writable = self.directory is not None  # False once a write to the folder has failed
        self._entries: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._bytes = 0
        self._disk_bytes: int | None = None  # estimate of the folder's entry bytes; None: not scanned yet
        self._bad: set[str] = set()  # keys whose file on disk was unreadable or invalid: rewrite them
        self.hits = 0
        self.misses = 0
        if self.directory is not None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self._disk_failed(exc)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def _file(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.pt"

    def get(self, key: str, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(states, mask) stored under `key`, as copies on `device`; None on a miss."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        elif self.directory is not None and self._file(key).is_file():
            entry = self._read(key)
            if entry is None:
                self._bad.add(key)
            else:
                self._touch(self._file(key))
                entry = (entry[0].to(device), entry[1].to(device))
                self._remember(key, entry)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        # Copies: whoever receives them may modify them in place without touching the cache.
        return entry[0].to(device, copy=True), entry[1].to(device, copy=True)

    def put(self, key: str, states: torch.Tensor, mask: torch.Tensor) -> None:
        """Store the hidden states [B, T, D] and mask [B, T] of one batch."""
        entry = (states.detach().clone(), mask.detach().clone())
        self._remember(key, entry)
        if self.writable and (key in self._bad or not self._file(key).is_file()):
            self._write(key, entry)

    def clear(self) -> None:
        """Empty the memory cache (files on disk stay; delete the folder to drop them)."""
        self._entries.clear()
        self._bytes = 0

    def _remember(self, key: str, entry: tuple[torch.Tensor, torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in entry)
        if size > self.max_bytes:
            return  # larger than the whole budget: disk only
        if key in self._entries:
            self._bytes -= sum(t.numel() * t.element_size() for t in self._entries.pop(key))
        self._entries[key] = entry
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= sum(t.numel() * t.element_size() for t in old)

    def _disk_failed(self, exc: OSError) -> None:
        """Stop writing to the folder, and say so (once: nothing writes after this)."""
        warnings.warn(f"embedding cache: cannot write to {self.directory} ({exc.strerror or exc}); "
                          "caching in memory only for this session", stacklevel=3)
        self.writable = False
        if not (self.directory is not None and self.directory.is_dir()):
            self.directory = None  # nothing to read there either

    def _write(self, key: str, entry: tuple[torch.Tensor, torch.Tensor]) -> None:
        target = self._file(key)
        record = {"format": CACHE_FORMAT, "key": key, "states": entry[0].cpu(), "mask": entry[1].cpu()}
        try:  # readers see the old state or the whole new file
            atomic_write(target, lambda tmp: torch.save(record, tmp), overwrite=True)
        except OSError as exc:
            self._disk_failed(exc)
            return
        self._bad.discard(key)
        if self._disk_bytes is None:
            self._disk_bytes = sum(size for _, size, _ in self._scan())
        else:
            self._disk_bytes += target.stat().st_size
        if self._disk_bytes > self.max_disk_bytes:
            self._evict()

    def _scan(self) -> list[tuple[float, int, Path]]:
        """(modification time, size, path) of every entry file in the folder."""
        found = []
        for path in self.directory.glob("??/*.pt"):
            try:
                stat = path.stat()
            except OSError:  # removed by another process meanwhile
                continue
            found.append((stat.st_mtime, stat.st_size, path))
        return found

    def _evict(self) -> None:
        """Delete the least recently used files until the folder is at 90% of its budget.

        Rescans rather than trusting the running estimate: other processes may share the folder.
        """
        files = sorted(self._scan(), key=lambda f: f[0])
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= 0.9 * self.max_disk_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
        self._disk_bytes = total

    @staticmethod
    def _touch(path: Path) -> None:
        """Mark a file as recently used (its modification time orders eviction)."""
        try:
            os.utime(path)
        except OSError:  # a read-only folder: still usable, its order just stays as it was
            pass

    def _read(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        try:
            pkg = torch.load(self._file(key), map_location="cpu", weights_only=True)
        except Exception:  # a damaged or foreign file is a miss, never an error
            return None
        if not isinstance(pkg, dict) or pkg.get("key") != key or pkg.get("format") != CACHE_FORMAT:
            return None
        states, mask = pkg.get("states"), pkg.get("mask")
        if not (isinstance(states, torch.Tensor) and isinstance(mask, torch.Tensor)
                and states.dtype.is_floating_point and states.dim() == 3
                and not mask.dtype.is_floating_point and not mask.is_complex() and mask.dim() == 2
                and tuple(states.shape[:2]) == tuple(mask.shape)):
            return None  # the right key with the wrong contents: a miss too
        return states, mask
