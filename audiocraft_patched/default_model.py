"""The embedded default model that `generate` uses when no model is named.

It is a small MusicGen (LM 1.3M parameters, 4 codebooks of 256 at 50 frames/s, 16 kHz mono)
trained on CPU on the synthetic music world of `audiocraft_patched/world` by
`audiocraft_patched/train`: it follows captions that name an instrument (flute, clarinet,
trumpet), a register, a tempo, the hi-hat density and the loudness. It ships with the package
in upstream's export format, with its frozen T5-architecture text encoder in `t5/` beside the
weights (the config names it `./t5`, resolved against the folder by `models/loaders.py`).
"""
from __future__ import annotations

from pathlib import Path

DEFAULT_NAME = "world-musicgen-v1"
DEFAULT_DIR = Path(__file__).parent / "assets" / DEFAULT_NAME
DEFAULT_NOTE = ("the embedded default is a small MusicGen trained only on a synthetic music world (flute, "
                "clarinet or trumpet melodies over hi-hats; see audiocraft_patched/world/README.md) and untrained "
                "on real music. It follows prompts such as 'a loud fast trumpet melody in a high register with "
                "busy hi-hats'; pass a real checkpoint folder for real music")
UNTRAINED_NOTE = DEFAULT_NOTE  # the name the command line imports
EXAMPLE_PROMPT = "a loud fast trumpet melody in a high register with busy hi-hats"


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
