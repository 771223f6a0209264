"""Audio IO and conversions. Mirrors `audiocraft/data/__init__.py` (audiocraft 1.3.0), which also
holds the training datasets; only the text-to-music path's modules are ported."""
from . import audio, audio_utils  # noqa: F401
