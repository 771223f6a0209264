"""Building blocks: conditioners, transformer, codebook patterns, SEANet.

Mirrors `audiocraft/modules/__init__.py` (audiocraft 1.3.0): the same names at package level
(1D convolutions only; the 2D ones of upstream's discriminators are not ported).
"""
from .conv import (  # noqa: F401
    NormConv1d,
    NormConvTranspose1d,
    StreamableConv1d,
    StreamableConvTranspose1d,
    pad1d,
    pad_for_conv1d,
    unpad1d,
)
from .seanet import SEANetDecoder, SEANetEncoder, StreamableLSTM  # noqa: F401
from .transformer import StreamingTransformer  # noqa: F401
