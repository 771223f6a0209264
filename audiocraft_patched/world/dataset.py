"""World clips on disk, for the `align` and `finetune` tools: WAV files + a JSONL manifest + captions.

Our own code (no upstream counterpart). The manifest follows upstream's audio dataset JSONL
(`{"path": ..., "description": ...}` per line), which `audiocraft_patched.align` reads.

    python -m audiocraft_patched.world.dataset --out data/world --clips 400 --seed 1
    python -m audiocraft_patched.world.dataset --out data/world --clips 0 --pairs 2000   # zh/en pairs only
"""
from __future__ import annotations

import argparse
import json
import wave
from pathlib import Path

import numpy as np

from ..utils.export import write_text
from .captions import caption, english_pairs, parallel_pairs
from .synth import CLIP_SECONDS, SAMPLE_RATE, random_attributes, render


def write_wav(path: Path, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """[S] float audio in [-1, 1] -> 16-bit mono WAV."""
    pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sr)
        f.writeframes(pcm.tobytes())


def write_pairs(path: str | Path, n: int, seed: int = 1, english: int = 0, overwrite: bool = False) -> Path:
    """Write `n` parallel training captions as TSV 'Chinese<TAB>English' (`align --pairs`: student, teacher).

    `english`: that many (English, English) pairs follow, drawn with `seed + 1`.
    """
    pairs = parallel_pairs(n, seed) + english_pairs(english, seed + 1)
    lines = [f"{student}\t{teacher}" for student, teacher in pairs]
    return write_text(path, "\n".join(lines) + "\n", overwrite=overwrite)


def write_world_dataset(out: str | Path, clips: int = 400, seed: int = 1, split: str = "train",
                        seconds: float = CLIP_SECONDS, language: str = "en") -> Path:
    """Write `clips` clips with `split` captions in `language` to `out`; returns the manifest path.

    Also writes `captions.txt` (one caption per line), the text-only data that `align` reads.
    """
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines, texts = [], []
    for i in range(clips):
        attrs = random_attributes(rng)
        text = caption(attrs, rng, split, language)
        write_wav(out / "audio" / f"{i:05d}.wav", render(attrs, int(rng.integers(2 ** 31)), seconds))
        lines.append(json.dumps({"path": f"audio/{i:05d}.wav", "description": text, **attrs.as_dict()}))
        texts.append(text)
    (out / "captions.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    manifest = out / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1, help="1, not the LM's 0: other clips than in training")
    parser.add_argument("--split", default="train", choices=("train", "heldout"))
    parser.add_argument("--language", default="en", choices=("en", "zh"), help="language of the captions")
    parser.add_argument("--pairs", type=int, default=0,
                        help="also write this many (Chinese, English) caption pairs to OUT/pairs.tsv")
    parser.add_argument("--english-pairs", type=int, default=0,
                        help="and this many (English, English) pairs after them (keeps English working)")
    args = parser.parse_args(argv)
    if args.clips:
        print(f"wrote {write_world_dataset(args.out, args.clips, args.seed, args.split, language=args.language)}")
    if args.pairs:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        print(f"wrote {write_pairs(Path(args.out) / 'pairs.tsv', args.pairs, args.seed, args.english_pairs)}")


if __name__ == "__main__":
    main()
