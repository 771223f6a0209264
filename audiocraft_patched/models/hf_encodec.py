"""Hugging Face `transformers.EncodecModel` as a `CompressionModel`: `{'pretrained': 'facebook/encodec_32khz'}`.

Mirrors `HFEncodecCompressionModel` in `audiocraft/models/encodec.py` (audiocraft 1.3.0), which
upstream builds when a `compression_state_dict.bin` names a pretrained codec instead of holding
weights (the released MusicGen checkpoints do). Same codes, scales, rates and codebook choice:
the number of codebooks is that of one of the model's target bandwidths, the largest by default.
Weights come from a local folder or the local Hugging Face cache, never from the network.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .encodec import CompressionModel


class HFEncodecCompressionModel(CompressionModel):
    """Wraps a `transformers.EncodecModel` (inference only).

    Args:
        model: the Hugging Face EnCodec.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        bits = math.log2(self.cardinality)
        counts = [bw * 1000 / (self.frame_rate * bits) for bw in model.config.target_bandwidths]
        if any(abs(c - round(c)) > 1e-3 for c in counts):
            raise ValueError(f"target_bandwidths {model.config.target_bandwidths} do not give whole numbers of "
                             f"codebooks at {self.frame_rate} frames/s and {self.cardinality} entries ({counts})")
        self.possible_num_codebooks = [int(round(c)) for c in counts]
        self._num_codebooks = max(self.possible_num_codebooks)

    def forward(self, x: torch.Tensor):
        raise NotImplementedError("the Hugging Face EnCodec is used for inference only (encode/decode), as upstream")

    def _bandwidth(self) -> float:
        return self.model.config.target_bandwidths[self.possible_num_codebooks.index(self._num_codebooks)]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, C, S] -> ([B, K, T] codes, scale or None), one chunk (as upstream asserts)."""
        out = self.model.encode(x, None, self._bandwidth(), return_dict=False)
        codes, scales = out[0], out[1]
        if len(codes) != 1:
            raise ValueError(f"the Hugging Face EnCodec cut the input into {len(codes)} chunks; models with "
                             "chunk_length_s (encodec_48khz) are not supported, as upstream")
        return codes[0], None if scales is None else scales[0]

    def decode(self, codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        scales = [None] if scale is None else scale  # upstream passes the scale tensor as the per-chunk list
        return self.model.decode(codes[None], scales, return_dict=False)[0]

    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.quantizer.decode(codes.transpose(0, 1))

    @property
    def channels(self) -> int:
        return self.model.config.audio_channels

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / math.prod(self.model.config.upsampling_ratios)

    @property
    def sample_rate(self) -> int:
        return self.model.config.sampling_rate

    @property
    def cardinality(self) -> int:
        return self.model.config.codebook_size

    @property
    def num_codebooks(self) -> int:
        return self._num_codebooks

    @property
    def total_codebooks(self) -> int:
        return max(self.possible_num_codebooks)

    def set_num_codebooks(self, n: int) -> None:
        if n not in self.possible_num_codebooks:
            raise ValueError(f"this EnCodec uses {self.possible_num_codebooks} codebooks (one per target "
                             f"bandwidth), not {n}")
        self._num_codebooks = n


def load_hf_encodec(name: str | Path, device: str | torch.device = "cpu",
                    cache_dir: str | None = None) -> HFEncodecCompressionModel:
    """`name`: a folder holding a saved `EncodecModel`, or a hub id already in the local HF cache."""
    from transformers import EncodecModel

    try:
        model = EncodecModel.from_pretrained(str(name), local_files_only=True, cache_dir=cache_dir)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"the pretrained codec {str(name)!r} is neither a folder holding a Hugging Face EncodecModel nor in the "
            f"local Hugging Face cache (nothing is downloaded); fill the cache on a machine with network access "
            f"(`huggingface-cli download {name}`) and copy it over") from exc
    return HFEncodecCompressionModel(model.eval()).to(device).eval()
