"""The embedded default model that `generate` uses when no model is named.

Until a trained demo checkpoint ships with the package, the default is a tiny MusicGen with
UNTRAINED (random) weights and a tiny random T5, built offline on first use (a few seconds) and
kept in a cache folder. It shows the whole pipeline working; its audio is noise-like and does
not follow the text. Point `generate` at a real checkpoint for music.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_NAME = "tiny-random-v1"
UNTRAINED_NOTE = ("the embedded default is a tiny MusicGen with untrained random weights: it runs the whole "
                  "pipeline but its audio does not follow the text; pass a real checkpoint folder for music")


def cache_root() -> Path:
    root = os.environ.get("AUDIOCRAFT_PATCHED_HOME")
    return Path(root) if root else Path.home() / ".cache" / "audiocraft_patched"


def default_model_dir() -> Path:
    """Folder of the default model, built atomically on first use."""
    folder = cache_root() / DEFAULT_NAME
    if (folder / "state_dict.bin").is_file() and (folder / "compression_state_dict.bin").is_file():
        return folder
    from .utils.tiny import make_tiny_musicgen, make_tiny_t5

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_NAME}-", dir=folder.parent))
    try:
        # The checkpoint names its encoder by folder: build it where it will finally live.
        make_tiny_t5(staging / "t5")
        make_tiny_musicgen(staging, encoder=staging / "t5", record_encoder_as=str(folder / "t5"),
                           segment_duration=10.0, dim=64, num_layers=2, card=256, sample_rate=16000)
        if folder.exists():  # another process finished first
            shutil.rmtree(staging)
        else:
            staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder
