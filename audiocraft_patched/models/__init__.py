"""Models: MusicGen, its LM and its codec (upstream's `audiocraft.models` names)."""
from .encodec import CompressionModel, EncodecModel, InterleaveStereoCompressionModel  # noqa: F401
from .lm import LMModel  # noqa: F401
from .musicgen import MusicGen  # noqa: F401
from . import builders, loaders  # noqa: F401
