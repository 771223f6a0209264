"""Quantizers of the compression model; mirrors `audiocraft/quantization` (audiocraft 1.3.0)."""
from .vq import BaseQuantizer, DummyQuantizer, QuantizedResult, ResidualVectorQuantizer

__all__ = ["BaseQuantizer", "DummyQuantizer", "QuantizedResult", "ResidualVectorQuantizer"]
