"""`MAGNeT`: masked non-autoregressive text to music (and to sound), with upstream's API and defaults.

Mirrors `audiocraft/models/magnet.py` (audiocraft 1.3.0): `get_pretrained` (default
`facebook/magnet-small-10secs`; also the 30 s and medium music models and `audio-magnet-*`),
`set_generation_params` with MAGNeT's defaults (top_p 0.9, temperature 3 annealed to 0, CFG
annealed from 10 to 1, decoding steps [20, 10, 10, 10], non-overlapping spans), and MusicGen's
`generate`, `generate_unconditional`, `generate_continuation`, `return_tokens`, progress callback.
The decoding itself is `MagnetLMModel.generate` (`lm_magnet.py`).

A MAGNeT generates its training segment (`max_duration`) at once, as upstream; beyond upstream,
`set_generation_params(duration=...)` may ask for less.
"""
from __future__ import annotations

import numbers
from typing import Sequence

import torch

from ..modules.conditioners.chroma import ChromaStemConditioner
from .encodec import CompressionModel
from .generation_params import check_generation_params
from .lm import LMModel
from .lm_magnet import SPAN_ARRANGEMENTS, MagnetLMModel
from .loaders import load_compression_model, load_lm_model
from .musicgen import MusicGen


class MAGNeT(MusicGen):
    """MAGNeT: a codec (`compression_model`) and a `MagnetLMModel` (`lm`).

    Args:
        name: the model's name, for display.
        compression_model: the audio codec.
        lm: MAGNeT's LM.
        max_duration: the segment generated at once (seconds); default: the training segment.
    """

    def __init__(self, name: str, compression_model: CompressionModel, lm: LMModel,
                 max_duration: float | None = None):
        if not isinstance(lm, MagnetLMModel):
            raise TypeError(f"MAGNeT needs a MagnetLMModel (lm_model: transformer_lm_magnet), got "
                            f"{type(lm).__name__}: load this checkpoint with MusicGen or AudioGen")
        super().__init__(name, compression_model, lm, max_duration)
        self.extend_stride = None  # one window: MAGNeT does not extend past its segment
        self.duration = self.max_duration
        self.set_generation_params()

    def compile_step(self, enable: bool = True) -> bool:
        """Not for MAGNeT: it decodes whole sequences in rounds, with no one-position step to compile."""
        if enable:
            raise NotImplementedError("compile_step compiles MusicGen's and AudioGen's autoregressive decode step; "
                                      "MAGNeT has none (it re-masks whole sequences): generate without it")
        return False

    @staticmethod
    def get_pretrained(name: str = "facebook/magnet-small-10secs", device: str | torch.device | None = None,
                       dtype: torch.dtype | str | None = None) -> "MAGNeT":
        """Load a checkpoint folder, or a hub id already in the local Hugging Face cache.

        Upstream's six: facebook/magnet-{small,medium}-{10,30}secs (music) and
        facebook/audio-magnet-{small,medium} (sound effects). `device` and `dtype` as
        `MusicGen.get_pretrained`'s.
        """
        if device is None:
            device = "cuda" if torch.cuda.device_count() else "cpu"
        compression_model = load_compression_model(name, device=device)
        lm = load_lm_model(name, device=device)
        if not isinstance(lm, MagnetLMModel):
            raise ValueError(f"{name} is not a MAGNeT checkpoint (its lm_model is not transformer_lm_magnet); "
                             "load it with MusicGen.get_pretrained or AudioGen.get_pretrained")
        lm.compression_model_framerate = int(compression_model.frame_rate)  # as upstream's loader records it
        for conditioner in lm.condition_provider.conditioners.values():
            if isinstance(conditioner, ChromaStemConditioner):
                conditioner.set_match_len(True)
        model = MAGNeT(name, compression_model, lm)
        if dtype is not None:
            model.set_dtype(dtype)
        return model

    def set_generation_params(self, use_sampling: bool = True, top_k: int = 0, top_p: float = 0.9,
                              temperature: float = 3.0, max_cfg_coef: float = 10.0, min_cfg_coef: float = 1.0,
                              decoding_steps: Sequence[int] = (20, 10, 10, 10), span_arrangement: str = "nonoverlap",
                              duration: float | None = None):
        """Decoding settings for the next calls (upstream's defaults).

        Args:
            use_sampling: sample (True) or take the argmax (False).
            top_k, top_p: keep the k best tokens / the nucleus of probability p (top_p wins if > 0).
            temperature: softmax temperature at the start of each codebook's decoding, decayed linearly to 0.
            max_cfg_coef, min_cfg_coef: classifier-free guidance, annealed from max to min as fewer tokens
                stay masked.
            decoding_steps: decoding rounds for each codebook (one entry per codebook).
            span_arrangement: masked spans on a grid ('nonoverlap') or starting anywhere ('stride1').
            duration: seconds to generate, at most `max_duration` (None: unchanged; upstream has no
                such setting and always generates `max_duration`).
        """
        duration = self.duration if duration is None else duration
        if isinstance(duration, numbers.Real) and duration > self.max_duration:
            raise ValueError(f"MAGNeT generates at most its segment, max_duration={self.max_duration:g} s; got "
                             f"duration={duration:g}")
        for cfg_coef in (max_cfg_coef, min_cfg_coef):  # MusicGen's checks, each guidance end as its cfg_coef
            check_generation_params(use_sampling=use_sampling, top_k=top_k, top_p=top_p, temperature=temperature,
                                    cfg_coef=cfg_coef, two_step_cfg=False, duration=duration, extend_stride=None,
                                    frame_rate=self.frame_rate, max_duration=self.max_duration)
        if span_arrangement not in SPAN_ARRANGEMENTS:
            raise ValueError(f"span_arrangement must be one of {SPAN_ARRANGEMENTS}, got {span_arrangement!r}")
        steps = list(decoding_steps)
        n_q = self.lm.num_codebooks
        if len(steps) < n_q or any(not isinstance(s, numbers.Real) or isinstance(s, bool) or int(s) != s or s < 1
                                   for s in steps):
            raise ValueError(f"decoding_steps must give a positive whole number of steps for each of the {n_q} "
                             f"codebooks, got {steps}")
        self.duration = duration
        self.generation_params = {"use_sampling": use_sampling, "temp": temperature, "top_k": top_k, "top_p": top_p,
                                  "max_cfg_coef": max_cfg_coef, "min_cfg_coef": min_cfg_coef,
                                  "decoding_steps": [int(s) for s in steps], "span_arrangement": span_arrangement}
