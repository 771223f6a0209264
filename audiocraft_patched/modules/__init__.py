"""Building blocks: conditioners, transformer, codebook patterns, SEANet."""
from .seanet import SEANetDecoder, SEANetEncoder  # noqa: F401
