"""audiocraft_patched: MusicGen text-to-music, upstream-compatible, with any Hugging Face text encoder.

Port code written for audiocraft by replacing `audiocraft` with `audiocraft_patched` in imports.
"""
__version__ = "0.1.0"

from . import data, models, modules  # noqa: E402,F401
