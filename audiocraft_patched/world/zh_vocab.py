"""Give all-MiniLM-L6-v2 the Chinese characters its vocabulary lacks, in its `[unusedN]` slots.

Our own code (no upstream counterpart). MiniLM's uncased BERT vocabulary holds 244 CJK
characters; almost every word of a Chinese music caption (响亮, 快速, 单簧管, ...) tokenizes to
`[UNK]`, so no adapter can read it. BERT keeps 994 `[unusedN]` entries for this: writing a
character into slot N makes the tokenizer emit that token id for it. The encoder's weights are
unchanged (those rows stay the near-random vectors they are, still distinct per slot); the
adapter learns what they mean from the (Chinese, English) pairs.

A character the table does not hold (e.g. one only held-out captions use) stays `[UNK]`, so
held-out synonyms are read through the characters they share with trained words.
"""
from __future__ import annotations

from pathlib import Path

from ..default_model import extended_vocab
from ..utils.export import copy_file, write_text

TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json")
MODEL_FILES = ("config.json", "model.safetensors")


def _vocab(folder: Path) -> list[str]:  # one token per line, the line number is its id
    return (Path(folder) / "vocab.txt").read_text(encoding="utf-8").splitlines()


def missing_characters(texts: list[str], folder: str | Path) -> str:
    """The CJK characters of `texts` that the vocabulary in `folder` lacks, in first-seen order."""
    known = set(_vocab(Path(folder)))
    out: dict[str, None] = {}
    for text in texts:
        for char in text:
            if "\u4e00" <= char <= "\u9fff" and char not in known:
                out[char] = None
    return "".join(out)


def added_characters(folder: str | Path, base: str | Path) -> str:
    """The characters `write_tokenizer` wrote into `folder`'s `[unusedN]` slots of `base`'s vocabulary.

    Raises a ValueError when the two differ otherwise (another tokenizer, or other weights).
    """
    ours, theirs = _vocab(Path(folder)), _vocab(Path(base))
    if len(ours) != len(theirs):
        raise ValueError(f"{folder} and {base} hold vocabularies of different sizes")
    chars = "".join(a for a, b in zip(ours, theirs) if a != b)
    if extended_vocab(base, chars) != ours:
        raise ValueError(f"{folder}'s vocabulary is not {base}'s with characters in its [unusedN] slots")
    for name in MODEL_FILES:
        if (Path(folder) / name).read_bytes() != (Path(base) / name).read_bytes():
            raise ValueError(f"{folder}/{name} differs from {base}/{name}: default-zh ships no encoder weights")
    return chars


def write_tokenizer(folder: str | Path, characters: str, out: str | Path, with_model: bool = False,
                    overwrite: bool = False) -> Path:
    """Write `folder`'s tokenizer with `characters` added to `out` (plus its weights if `with_model`).

    The fast tokenizer's `tokenizer.json` is left out: transformers rebuilds it from `vocab.txt`.
    Each file is written atomically; existing files are kept unless `overwrite`.
    """
    folder, out = Path(folder), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "vocab.txt", "\n".join(extended_vocab(folder, characters)) + "\n", overwrite=overwrite)
    for name in TOKENIZER_FILES + (MODEL_FILES if with_model else ()):
        copy_file(folder / name, out / name, overwrite=overwrite)
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse

    from ..default_model import minilm_folder
    from .captions import vocabulary

    parser = argparse.ArgumentParser(description="Write all-MiniLM-L6-v2 with the characters of the Chinese "
                                                 "attribute words added (the student folder of `align --pairs`)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--overwrite", action="store_true", help="replace files already in OUT")
    args = parser.parse_args(argv)
    chars = missing_characters(vocabulary("zh"), minilm_folder())
    write_tokenizer(minilm_folder(), chars, args.out, with_model=True, overwrite=args.overwrite)
    print(f"wrote {args.out} ({len(chars)} characters added: {chars})")


if __name__ == "__main__":
    main()
