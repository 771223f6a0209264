"""`ChromaStemConditioner`: MusicGen-melody's melody condition (`model: chroma_stem`).

Mirrors `ChromaStemConditioner` of `audiocraft/modules/conditioners.py` (audiocraft 1.3.0):
same constructor arguments, config keys and state-dict keys (`output_proj.*`,
`chroma.spec.window`). A reference waveform loses its drums and bass (demucs `htdemucs`: the
vocals and other stems are summed), then becomes one-hot chroma per STFT frame
(`modules/chroma.py`), projected to the LM width.

Stem separation differs from upstream in when and how it can fail, never silently:
- demucs is loaded on first use, not when the checkpoint loads, and only from what is already
  on this machine (the `demucs` package and its `htdemucs` weights in the torch hub cache);
  nothing is downloaded. Without them, a melody raises an error that names the alternative.
- `stems="full_mix"` (`generate_with_chroma(..., melody_stems="full_mix")`, CLI
  `--melody-full-mix`) takes the chroma of the whole mix instead: an approximation, as drums and
  bass then weigh in the chroma the model was not trained on.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from ...data.audio_utils import convert_audio
from ..chroma import ChromaExtractor
from .base import ConditionType, WavCondition, WaveformConditioner
from .registry import register_encoder

STEM_MODES = ("demucs", "full_mix")
DEMUCS_MODEL = "htdemucs"
MELODY_STEMS = ("vocals", "other")  # what upstream keeps of the separated stems


class StemSeparationUnavailable(RuntimeError):
    """demucs (or its htdemucs weights) is missing where stem separation was asked for."""


def _unavailable(reason: str) -> StemSeparationUnavailable:
    return StemSeparationUnavailable(
        f"MusicGen-melody removes drums and bass from the melody with demucs {DEMUCS_MODEL!r} before taking its "
        f"chroma, but {reason}. Either make demucs available (pip install demucs, then put the {DEMUCS_MODEL} "
        "weights in the torch hub cache on a machine with network access), or take the chroma of the full mix: "
        "melody_stems='full_mix' in generate_with_chroma (CLI: --melody-full-mix). The full mix is an "
        "approximation: drums and bass then weigh in the chroma.")


def demucs_weight_files() -> list[Path]:
    """Where demucs keeps the `htdemucs` weights once downloaded (torch hub's checkpoints folder).

    Read from the listing that the demucs package ships (`remote/htdemucs.yaml` names the
    models of the bag, `remote/files.txt` their files), so no network is needed to check.
    """
    import yaml
    from demucs import pretrained

    remote = Path(pretrained.REMOTE_ROOT)
    signatures = yaml.safe_load((remote / f"{DEMUCS_MODEL}.yaml").read_text())["models"]
    listed = [line.strip() for line in (remote / "files.txt").read_text().splitlines()
              if line.strip() and not line.strip().startswith(("#", "root:"))]
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    files = []
    for signature in signatures:
        names = [name for name in listed if name.startswith(f"{signature}-")]
        if not names:
            raise _unavailable(f"the demucs package lists no file for {DEMUCS_MODEL}'s model {signature}")
        files.append(checkpoints / names[0])
    return files


def load_demucs(device: torch.device | str) -> torch.nn.Module:
    """demucs `htdemucs` from the local cache, or `StemSeparationUnavailable` saying what is missing."""
    if importlib.util.find_spec("demucs") is None:
        raise _unavailable("the `demucs` package is not installed")
    missing = [str(f) for f in demucs_weight_files() if not f.is_file()]
    if missing:
        raise _unavailable(f"its weights are not in the local cache (looked for {', '.join(missing)}; nothing is "
                           "downloaded here)")
    from demucs import pretrained

    return pretrained.get_model(DEMUCS_MODEL).to(device).eval()


@register_encoder("chroma_stem")
class ChromaStemConditioner(WaveformConditioner):
    """Chroma of the melodic stems of a waveform, one vector per STFT frame.

    Args:
        output_dim: LM width.
        sample_rate: rate of the waveforms the chroma is taken at (the model's).
        n_chroma: pitch classes.
        radix2_exp: STFT window of 2 ** radix2_exp samples.
        duration: training segment duration (s); with `match_len_on_eval`, every chroma is cut
            or repeated to that many frames.
        match_len_on_eval: as above; the mask is then all ones (upstream's behaviour).
        eval_wavs, n_eval_wavs: upstream's training-evaluation manifest; only `None` is supported.
        cache_path: upstream's training-time chroma cache; only `None` is supported.
        device: where the chroma is computed.
        **kwargs: `ChromaExtractor` options (`argmax`, `norm`, `nfft`, `winlen`, `winhop`).
    """

    def __init__(self, output_dim: int, sample_rate: int, n_chroma: int, radix2_exp: int, duration: float,
                 match_len_on_eval: bool = True, eval_wavs: str | None = None, n_eval_wavs: int = 0,
                 cache_path: str | Path | None = None, device: torch.device | str = "cpu", **kwargs: Any):
        for key, value, what in (("eval_wavs", eval_wavs, "an evaluation manifest"),
                                 ("cache_path", cache_path, "a chroma cache")):
            if value is not None:
                raise ValueError(f"chroma_stem.{key}={value!r} ({what}, a training feature of upstream) is not "
                                 f"supported; set {key}: null in the config")
        super().__init__(dim=n_chroma, output_dim=output_dim)
        self.device = device
        self.sample_rate = sample_rate
        self.duration = duration
        self.configured_match_len = match_len_on_eval  # what checkpoints record, whatever `set_match_len` did
        self.set_match_len(match_len_on_eval)
        self.n_eval_wavs = n_eval_wavs
        self.radix2_exp = radix2_exp
        self.extractor_options = dict(kwargs)  # argmax, norm, nfft, winlen, winhop as the config gave them
        self.chroma = ChromaExtractor(sample_rate=sample_rate, n_chroma=n_chroma, radix2_exp=radix2_exp,
                                      **kwargs).to(device)
        # Frames of a training segment: torch.stft's centred framing of max(samples, nfft).
        nfft = self.chroma.nfft
        self.chroma_len = 1 + (max(int(sample_rate * duration), nfft) + 2 * (nfft // 2) - nfft) // self.chroma.winhop
        self.stems = "demucs"  # or "full_mix"; see `using_stems`
        self.__dict__["demucs"] = None  # loaded on first use; kept out of the state dict

    def set_match_len(self, match_len: bool) -> None:
        """Loop or cut every chroma to `chroma_len` frames, unmasked (True), or keep its length, masked (False)."""
        self.match_len_on_eval = match_len
        self._use_masking = not match_len  # a looped chroma has no padding to mask

    @contextlib.contextmanager
    def using_stems(self, stems: str | None) -> Iterator[None]:
        """Within the block, separate stems with demucs ('demucs') or take the full mix ('full_mix')."""
        if stems is None:
            yield
            return
        if stems not in STEM_MODES:
            raise ValueError(f"melody stems must be one of {STEM_MODES}, got {stems!r}")
        saved, self.stems = self.stems, stems
        try:
            yield
        finally:
            self.stems = saved

    def options(self) -> dict[str, Any]:
        # Upstream's keys; `duration` is not one (its builder passes dataset.segment_duration).
        return {"sample_rate": self.sample_rate, "n_chroma": self.chroma.n_chroma, "radix2_exp": self.radix2_exp,
                **self.extractor_options, "match_len_on_eval": self.configured_match_len, "eval_wavs": None,
                "n_eval_wavs": self.n_eval_wavs, "cache_path": None}

    def set_dtype(self, dtype: torch.dtype) -> None:
        self.output_proj.to(dtype)  # the chroma itself stays float32 (as upstream's autocast keeps it)

    def describe(self) -> dict[str, str]:
        info = super().describe()
        stems = "full mix" if self.stems == "full_mix" else f"demucs {DEMUCS_MODEL} (vocals + other)"
        info["summary"] = (f"chroma, {self.chroma.n_chroma} classes, STFT {self.chroma.winlen} at "
                           f"{self.sample_rate} Hz{', one-hot' if self.chroma.argmax else ''}; stems: {stems}")
        return info

    def tokenize(self, x: WavCondition) -> WavCondition:
        return WavCondition(x.wav.to(self.device), x.length.to(self.device), x.sample_rate, x.path, x.seek_time)

    def encode(self, x: WavCondition) -> ConditionType:
        """Chroma [B, frames, n_chroma] and its mask (all ones with `match_len_on_eval`, as upstream)."""
        with torch.no_grad():
            chroma = self._get_wav_embedding(x)
        if self._use_masking:
            frames = x.length / self.chroma.winhop  # a frame counts while its start is inside the clip
            mask = (torch.arange(chroma.shape[1], device=chroma.device)[None, :] < frames[:, None]).int()
        else:
            mask = torch.ones_like(chroma[..., 0])
        return chroma, mask

    def _get_wav_embedding(self, x: WavCondition) -> torch.Tensor:
        """Chroma [B, frames, n_chroma] of the batch (of its stems, unless `stems='full_mix'`)."""
        autocast = (torch.autocast(torch.device(self.device).type, enabled=False)
                    if torch.device(self.device).type != "cpu" else contextlib.nullcontext())
        self.chroma.float()  # (a no-op unless the LM was cast: the chroma is computed in float32, as upstream)
        with autocast:
            if x.wav.shape[-1] == 1:  # a batch of null conditions: nothing to separate
                chroma = self.chroma(x.wav.float())
            else:
                rates = set(x.sample_rate)
                if len(rates) != 1:
                    raise ValueError(f"all melodies of a batch must share one sample rate, got {sorted(rates)}")
                chroma = self.chroma(self._melody_wav(x.wav.float(), rates.pop()))
        if self.match_len_on_eval:
            frames = chroma.shape[1]
            if frames < self.chroma_len:  # a short melody loops
                chroma = chroma.repeat(1, math.ceil(self.chroma_len / frames), 1)
            chroma = chroma[:, :self.chroma_len]
        return chroma

    def _melody_wav(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """[B, 1, T] at `sample_rate` -> the melodic part [B, 1, T'] at the conditioner's rate."""
        if self.stems == "full_mix":
            return wav if sample_rate == self.sample_rate else convert_audio(wav, sample_rate, self.sample_rate, 1)
        if self.stems != "demucs":
            raise ValueError(f"stems must be one of {STEM_MODES}, got {self.stems!r}")
        if self.__dict__["demucs"] is None:
            self.__dict__["demucs"] = load_demucs(self.device)
        separator = self.__dict__["demucs"]
        from demucs.apply import apply_model

        wav = convert_audio(wav, sample_rate, separator.samplerate, separator.audio_channels)
        stems = apply_model(separator, wav, device=self.device)  # [B, sources, C, T]
        keep = [separator.sources.index(name) for name in MELODY_STEMS]
        return convert_audio(stems[:, keep].sum(1), separator.samplerate, self.sample_rate, 1)


def melody_conditions(melody_wavs: Any, melody_sample_rate: int, sample_rate: int, channels: int,
                      device: torch.device | str) -> list[WavCondition]:
    """`generate_with_chroma`'s melodies ([B, C, T], [C, T] or a list of [C, T] / None) -> one WavCondition each.

    Each melody is resampled to the model's rate and channels; `None` gives the null condition
    (an empty clip), as upstream builds them.
    """
    if isinstance(melody_wavs, torch.Tensor):
        if melody_wavs.dim() == 2:
            melody_wavs = melody_wavs[None]
        if melody_wavs.dim() != 3:
            raise ValueError(f"melody_wavs must be [B, C, T], [C, T] or a list of [C, T], got shape "
                             f"{tuple(melody_wavs.shape)}")
        melody_wavs = list(melody_wavs)
    elif not isinstance(melody_wavs, Sequence) or isinstance(melody_wavs, str):
        raise TypeError(f"melody_wavs must be a tensor or a list of tensors [C, T] (None for no melody), got "
                        f"{type(melody_wavs).__name__}; read a file with audiocraft_patched.data.audio.audio_read")
    out = []
    for i, melody in enumerate(melody_wavs):
        if melody is None:
            out.append(WavCondition(torch.zeros(1, 1, 1, device=device), torch.tensor([0], device=device),
                                    sample_rate=[sample_rate], path=[None]))
            continue
        if not isinstance(melody, torch.Tensor) or melody.dim() != 2 or melody.shape[-1] == 0:
            shape = tuple(melody.shape) if isinstance(melody, torch.Tensor) else type(melody).__name__
            raise ValueError(f"melody {i} must be a non-empty tensor [C, T], got {shape}")
        if not torch.isfinite(melody).all():
            raise ValueError(f"melody {i} holds NaN or infinite samples")
        melody = convert_audio(melody.float(), melody_sample_rate, sample_rate, channels)
        out.append(WavCondition(melody[None].to(device), torch.tensor([melody.shape[-1]], device=device),
                                sample_rate=[sample_rate], path=[None]))
    return out


def melody_window(melody: WavCondition, time_offset: float, duration: float, sample_rate: int) -> WavCondition:
    """The part of a whole melody [1, C, T] that conditions one window of a generation past `max_duration`.

    As upstream's `MusicGen._generate_tokens`: `duration` seconds from `time_offset` on, the
    melody looping when shorter.
    """
    length = int(melody.length.reshape(-1)[0])
    start, size = int(time_offset * sample_rate), int(duration * sample_rate)
    positions = torch.arange(start, start + size, device=melody.wav.device) % length
    return WavCondition(melody.wav[..., positions], torch.full_like(melody.length, size),
                        [sample_rate] * melody.wav.shape[0], [None], [0.0])
