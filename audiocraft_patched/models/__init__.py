"""Models: MusicGen, AudioGen, MAGNeT, their LMs and codecs (upstream's `audiocraft.models` names)."""
from .encodec import CompressionModel, EncodecModel, InterleaveStereoCompressionModel  # noqa: F401
from .hf_encodec import HFEncodecCompressionModel  # noqa: F401  ({'pretrained': ...} codecs)
from .lm import LMModel  # noqa: F401
from .musicgen import MusicGen  # noqa: F401
from .lm_magnet import MagnetLMModel  # noqa: F401
from .audiogen import AudioGen  # noqa: F401
from .magnet import MAGNeT  # noqa: F401
from .generators import load_generator  # noqa: F401  (the generator a checkpoint's config names)
from . import builders, loaders  # noqa: F401

# Upstream names not implemented here: importing one says so and what to use instead, rather
# than a bare "cannot import name".
_NOT_SUPPORTED = {
    "MultiBandDiffusion": "the diffusion decoder is not ported; tokens are decoded by the model's EnCodec "
                          "(model.compression_model.decode), upstream's default (USE_DIFFUSION_DECODER = False "
                          "in its demo notebooks)",
    "DiffusionUnet": "the diffusion decoder (MultiBandDiffusion) and its UNet are not ported",
    "DAC": "only EnCodec compression models are ported",
    "HFEncodecModel": "only audiocraft's own EnCodec is ported",
}


def __getattr__(name: str):
    if name in _NOT_SUPPORTED:
        raise ImportError(f"{name} is not supported by audiocraft_patched: {_NOT_SUPPORTED[name]}", name=name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
