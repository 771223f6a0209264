"""`AudioGen`: text to sound effects, on MusicGen's machinery with AudioGen's defaults.

Mirrors `audiocraft/models/audiogen.py` (audiocraft 1.3.0): `get_pretrained` (default
`facebook/audiogen-medium`: T5-large conditioner, 16 kHz EnCodec, 10 s segments),
`set_generation_params` with AudioGen's defaults (duration 10 s, extend_stride 2 s; 5 s right
after loading, as upstream), `generate`, `generate_unconditional`, `generate_continuation`,
`return_tokens` and the progress callback. An AudioGen checkpoint is a MusicGen one with another
solver: same LM class, same files, same loader. Text conditioning only, as upstream.
"""
from __future__ import annotations

import torch

from ..modules.conditioners.chroma import ChromaStemConditioner
from .builders import get_debug_compression_model, get_debug_lm_model
from .encodec import CompressionModel
from .lm import LMModel
from .lm_magnet import MagnetLMModel
from .loaders import load_compression_model, load_lm_model
from .musicgen import MusicGen


class AudioGen(MusicGen):
    """AudioGen: a 16 kHz codec (`compression_model`) and an autoregressive LM over its codes (`lm`).

    Args:
        name: the model's name, for display.
        compression_model: the audio codec.
        lm: the language model.
        max_duration: longest window generated in one go (seconds); default: the training segment.
    """

    def __init__(self, name: str, compression_model: CompressionModel, lm: LMModel,
                 max_duration: float | None = None):
        if isinstance(lm, MagnetLMModel):
            raise TypeError("this LM is MAGNeT's (non-autoregressive): load it with MAGNeT.get_pretrained")
        super().__init__(name, compression_model, lm, max_duration)
        self.set_generation_params(duration=5)  # upstream's default right after loading

    @staticmethod
    def get_pretrained(name: str = "facebook/audiogen-medium", device: str | torch.device | None = None,
                       dtype: torch.dtype | str | None = None) -> "AudioGen":
        """Load 'debug', a checkpoint folder, or a hub id already in the local Hugging Face cache.

        `device` and `dtype` as `MusicGen.get_pretrained`'s.
        """
        if device is None:
            device = "cuda" if torch.cuda.device_count() else "cpu"
        if name == "debug":
            model = AudioGen(name, get_debug_compression_model(device, sample_rate=16000), get_debug_lm_model(device),
                             max_duration=10)
        else:
            lm = load_lm_model(name, device=device)
            if any(isinstance(c, ChromaStemConditioner) for c in lm.condition_provider.conditioners.values()):
                raise ValueError(f"{name} conditions on a melody (chroma): AudioGen takes text only, as upstream; "
                                 "load it with MusicGen.get_pretrained")
            model = AudioGen(name, load_compression_model(name, device=device), lm)
        if dtype is not None:
            model.set_dtype(dtype)
        return model

    def set_generation_params(self, use_sampling: bool = True, top_k: int = 250, top_p: float = 0.0,
                              temperature: float = 1.0, duration: float = 10.0, cfg_coef: float = 3.0,
                              two_step_cfg: bool = False, extend_stride: float | None = 2):
        """Sampling settings for the next calls, with AudioGen's defaults (see `MusicGen.set_generation_params`).

        Past `max_duration` (10 s for audiogen-medium) windows advance by `extend_stride` seconds
        (None: AudioGen's 2 s, as when it is not given).
        """
        extend_stride = 2 if extend_stride is None else extend_stride
        super().set_generation_params(use_sampling=use_sampling, top_k=top_k, top_p=top_p, temperature=temperature,
                                      duration=duration, cfg_coef=cfg_coef, two_step_cfg=two_step_cfg,
                                      extend_stride=extend_stride)
