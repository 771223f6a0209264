"""Training data for alignment and fine-tuning: captions, parallel pairs, audio manifests.

No upstream counterpart for captions and pairs. The audio manifest follows upstream's
`audiocraft/data/audio_dataset.py` JSONL (one `{"path": ..., ...}` per line), with the caption
either in the line (`description`) or in a sidecar JSON next to the audio file, as upstream's
`MusicDataset` reads it. EnCodec tokens are computed once per file and cached on disk, keyed by
the file (path, size, mtime) and the codec's weights.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from ..utils.export import save_torch

CAPTION_KEYS = ("description", "caption", "text")


def read_captions(path: str | Path) -> list[str]:
    """One caption per line (UTF-8); blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} not found (expected one caption per line)")
    captions = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    captions = [c for c in captions if c]
    if not captions:
        raise ValueError(f"caption file {path} holds no caption (one caption per line)")
    return captions


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """Parallel (student text, teacher text) pairs.

    A `.jsonl` file holds one `{"student": ..., "teacher": ...}` per line; any other file one
    `student<TAB>teacher` per line. The student text is what the new encoder reads (e.g. Chinese),
    the teacher text what the original encoder understood (e.g. English).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file {path} not found")
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                record = json.loads(line)
                pair = (str(record["student"]).strip(), str(record["teacher"]).strip())
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: expected {{\"student\": ..., \"teacher\": ...}}, "
                                 f"got {line[:80]!r}") from exc
        else:
            fields = line.split("\t")
            if len(fields) != 2:
                raise ValueError(f"{path}:{number}: expected 'student text<TAB>teacher text', got "
                                 f"{len(fields)} tab-separated field(s): {line[:80]!r}")
            pair = (fields[0].strip(), fields[1].strip())
        if not all(pair):
            raise ValueError(f"{path}:{number}: empty text in pair {pair}")
        pairs.append(pair)
    if not pairs:
        raise ValueError(f"pairs file {path} holds no pair")
    return pairs


def split_holdout(n: int, holdout: float | int, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, held-out): `holdout` is a fraction in (0, 1) or a count."""
    count = int(round(holdout * n)) if isinstance(holdout, float) and holdout < 1 else int(holdout)
    if not 0 < count < n:
        raise ValueError(f"holdout={holdout} leaves {count} of {n} items held out; need at least one item "
                         "on each side (give a fraction in (0, 1) or a count)")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[count:]), sorted(order[:count])


def random_codes(n: int, n_q: int, steps: int, card: int, seed: int) -> torch.Tensor:
    """Uniform random code sequences [n, K, steps] (the LM's inputs for distribution matching)."""
    return torch.randint(card, (n, n_q, steps), generator=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class AudioItem:
    path: Path
    description: str


def read_manifest(manifest: str | Path, audio_dir: str | Path | None = None) -> list[AudioItem]:
    """Audio files and captions from a JSONL manifest.

    Args:
        manifest: one JSON object per line with `path` (relative to `audio_dir`, or absolute) and
            a caption under `description` (or `caption` / `text`); without one, the caption is
            read from `<audio file>.json` (upstream's sidecar, key `description`).
        audio_dir: base folder of relative paths; default: the manifest's folder.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {manifest} not found (JSONL, one {{\"path\": ..., "
                                "\"description\": ...}} per line)")
    base = Path(audio_dir) if audio_dir is not None else manifest.parent
    items = []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            path = base / record["path"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{manifest}:{number}: expected a JSON object with a 'path', got {line[:80]!r}") from exc
        text = next((record[k] for k in CAPTION_KEYS if record.get(k)), None)
        if text is None:
            sidecar = path.with_suffix(".json")
            if sidecar.is_file():
                info = json.loads(sidecar.read_text(encoding="utf-8"))
                text = next((info[k] for k in CAPTION_KEYS if info.get(k)), None)
        if not text:
            raise ValueError(f"{manifest}:{number}: no caption for {path}: add \"description\" to the line or "
                             f"write {path.with_suffix('.json')} with a \"description\"")
        if not path.is_file():
            raise FileNotFoundError(f"{manifest}:{number}: audio file {path} not found (relative paths are "
                                    f"read from {base}; pass --audio-dir to change that)")
        items.append(AudioItem(path, str(text).strip()))
    if not items:
        raise ValueError(f"manifest {manifest} lists no audio file")
    return items


def codec_fingerprint(codec: torch.nn.Module) -> str:
    """Short hash of a codec's weights: cached tokens are only reused with the same codec."""
    digest = hashlib.sha1()
    for name, value in sorted(codec.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def encode_audio_tokens(items: list[AudioItem], codec, cache_dir: str | Path,
                        device: str | torch.device = "cpu") -> tuple[list[torch.Tensor], int]:
    """EnCodec codes [K, T] of every file, computed once and cached in `cache_dir`.

    Returns the codes and how many files were encoded now (the others came from the cache).
    """
    from ..data.audio import audio_read
    from ..data.audio_utils import convert_audio

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    codec_id = codec_fingerprint(codec)
    out, computed = [], 0
    for item in items:
        stat = item.path.stat()
        key = hashlib.sha1(f"{item.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{codec_id}".encode())
        file = cache / f"{key.hexdigest()[:20]}.pt"
        if file.is_file():
            try:
                out.append(torch.load(file, weights_only=True))
                continue
            except Exception:  # a damaged cache file (e.g. a full disk): encode the audio again
                pass
        wav, sr = audio_read(item.path)  # refuses NaN/inf samples, naming the file
        if wav.shape[-1] == 0:
            raise ValueError(f"{item.path} holds no audio (0 samples): remove it from the manifest, or replace it")
        wav = convert_audio(wav, sr, codec.sample_rate, codec.channels)
        with torch.no_grad():
            codes, scale = codec.encode(wav[None].to(device))
        if scale is not None:
            raise ValueError("this codec renormalizes audio (returns a scale): MusicGen's LM cannot be trained on it")
        codes = codes[0].cpu()
        save_torch(codes, file, overwrite=True)  # atomic: a concurrent or interrupted run never reads half a file
        out.append(codes)
        computed += 1
    return out, computed


def segment(codes: list[torch.Tensor], steps: int) -> list[tuple[int, torch.Tensor]]:
    """Cut each file's codes [K, T] into non-overlapping [K, steps] pieces: (file index, piece).

    A file shorter than `steps` gives no piece; the tail of each file is dropped.
    """
    if steps < 1:
        raise ValueError(f"segment length must be >= 1 step, got {steps}")
    pieces = [(i, c[:, start:start + steps]) for i, c in enumerate(codes)
              for start in range(0, c.shape[-1] - steps + 1, steps)]
    if not pieces:
        longest = max(c.shape[-1] for c in codes)
        raise ValueError(f"no audio file is {steps} codec frames long (longest: {longest}); lower --segment-steps")
    return pieces
