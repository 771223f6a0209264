"""The models behind the web page: loaded lazily and once each, one generation at a time per model.

No gradio here (the page is `app/page.py`), so this is what the tests and scripts drive directly.
No upstream counterpart: upstream's `demos/musicgen_app.py` keeps one global model and reloads it
when the picker changes; the page compares models, so the pool keeps every model it has loaded.

A model is keyed by (name, dtype, quantization): casting a loaded model to bf16 and back, or
quantizing it, would change it for the next user, so each variant is its own copy, loaded on first use.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

DTYPES = ("fp32", "bf16")
QUANTIZATIONS = ("none", "int8", "int4", "w8a8", "int8-dynamic")  # `MusicGen.quantize`: the LM's transformer
MAX_DURATION_S = 30.0  # a page request longer than this is refused: the machine is shared by every user


@dataclass
class Clip:
    """One model's answer to a request: audio plus what the page shows beside it."""
    model: str
    wav: np.ndarray  # [C, S] float32, as generated (not normalized: loudness is part of what is compared)
    sample_rate: int
    timing: str  # "conditioning 3.1 ms | LM 1.20 s (9.6 ms/step) | decode 0.05 s | total 1.3 s"
    encoder: list[str] = field(default_factory=list)  # one line per conditioner: encoder and projection origin


class ModelPool:
    """Loads models by name on first use (`default`, `default-zh`, folders, cached hub ids) and runs them.

    Args:
        names: the models the page offers, in picker order. Any other name is refused.
        device: where models run.
        loader: `name -> model` (default `MusicGen.get_pretrained`); tests pass their own.
    """

    def __init__(self, names: list[str], device: str = "cpu", loader: Any = None):
        if not names:
            raise ValueError("the pool needs at least one model name")
        self.names = list(dict.fromkeys(names))
        self.device = device
        self._loader = loader
        self._models: dict[tuple[str, str, str], Any] = {}
        self._errors: dict[tuple[str, str, str], str] = {}  # a model that failed to load keeps failing fast
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._guard = threading.Lock()  # protects the three dicts above

    def _lock(self, key: tuple[str, str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _load(self, name: str, dtype: str, quantize: str):
        """The model for (name, dtype, quantize); call with that key's lock held."""
        key = (name, dtype, quantize)
        if key in self._models:
            return self._models[key]
        if key in self._errors:
            raise ValueError(self._errors[key])
        try:
            if self._loader is not None:
                model = self._loader(name)
            else:
                from ..models import MusicGen

                model = MusicGen.get_pretrained(name, device=self.device)
            if dtype != "fp32":
                model.set_dtype(dtype)
            if quantize != "none":
                model.quantize(quantize)
        except Exception as exc:  # any failure is shown on the page; the server keeps serving other models
            message = f"model {name!r} failed to load: {type(exc).__name__}: {exc}"
            self._errors[key] = message
            raise ValueError(message) from exc
        self._models[key] = model
        return model

    def model(self, name: str, dtype: str = "fp32", quantize: str = "none"):
        """The loaded model `name` in `dtype`, quantized as `quantize` (loading it if needed)."""
        self._check_name(name, dtype, quantize)
        with self._lock((name, dtype, quantize)):
            return self._load(name, dtype, quantize)

    def _check_name(self, name: str, dtype: str, quantize: str) -> None:
        if name not in self.names:
            raise ValueError(f"unknown model {name!r}; this page offers {self.names} (start the app with "
                             "`audiocraft-patched app MODEL ...` to add one)")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")

    def capabilities(self, name: str) -> set[str]:
        """Which inputs model `name` accepts besides text: 'melody', 'image', 'audio_prompt'."""
        from ..modules.conditioners import ENCODERS
        from ..modules.conditioners.base import ImageConditioner

        found = set()
        for cond in self.model(name).lm.condition_provider.conditioners.values():
            if isinstance(cond, ImageConditioner):
                found.add("image")
            elif isinstance(cond, ENCODERS["clap_audio"]):
                found.add("audio_prompt")
            elif isinstance(cond, ENCODERS["chroma_stem"]):
                found.add("melody")
        return found

    def generate(self, name: str, prompt: str, *, seed: int = 0, duration: float = 2.0, top_k: int = 250,
                 cfg_coef: float = 3.0, dtype: str = "fp32", quantize: str = "none", negative: str = "",
                 melody: str | None = None,
                 image: str | None = None, audio_prompt: str | None = None) -> Clip:
        """Generate one clip with model `name`; ValueError (with what to change) for bad requests."""
        self._check_name(name, dtype, quantize)
        prompt = (prompt or "").strip()
        if not prompt and not (melody or image or audio_prompt):
            raise ValueError("type a prompt (or give a melody / image / audio prompt the model accepts)")
        if not (isinstance(duration, (int, float)) and 0 < duration <= MAX_DURATION_S):
            raise ValueError(f"duration must be in (0, {MAX_DURATION_S:g}] seconds on this page, got {duration}")
        key = (name, dtype, quantize)
        with self._lock(key):  # one generation per model at a time: params and RNG are model state
            model = self._load(*key)
            stride = min(18.0, model.max_duration / 2)
            model.set_generation_params(duration=float(duration), top_k=int(top_k), cfg_coef=float(cfg_coef),
                                        extend_stride=stride)
            start = time.perf_counter()
            torch.manual_seed(int(seed))
            wav = self._run(model, prompt or None, negative.strip(), melody, image, audio_prompt)
            total = time.perf_counter() - start
            steps = max(1, round(float(duration) * model.frame_rate))
            clip = Clip(name, wav[0].float().cpu().numpy(), model.sample_rate, timing_line(model.timings, steps, total),
                        encoder_lines(model))
        return clip

    @staticmethod
    def _run(model, prompt: str | None, negative: str, melody: str | None, image: str | None,
             audio_prompt: str | None) -> torch.Tensor:
        extra: dict[str, Any] = {}
        if negative:
            extra["negative_prompts"] = [negative]
        if melody:
            from ..data.audio import audio_read

            wav, sr = audio_read(melody)
            return model.generate_with_chroma([prompt], wav[None], sr, **extra)
        if image or audio_prompt:
            if image:
                extra["images"] = [image]
            if audio_prompt:
                extra["audio_prompts"] = [audio_prompt]
            return model.generate([prompt], **extra)
        return model.generate([prompt], **extra)


def timing_line(timings: dict[str, float], steps: int, total: float) -> str:
    """The CLI's timing line from `MusicGen.timings` (seconds per stage of the last call)."""
    lm = timings.get("lm", 0.0)
    return (f"conditioning {timings.get('conditioning', 0.0) * 1e3:.1f} ms | LM {lm:.2f} s "
            f"({lm / steps * 1e3:.1f} ms/step) | decode {timings.get('decode', 0.0):.2f} s | total {total:.2f} s")


def encoder_lines(model) -> list[str]:
    """One line per conditioner: its kind, its encoder and where its projection comes from."""
    lines = []
    for attribute, cond in model.lm.condition_provider.conditioners.items():
        info = cond.describe()
        summary = info["summary"]
        if Path(info["source"]).is_absolute():  # a folder: its name says enough, the machine's path does not
            summary = summary.replace(info["source"], Path(info["source"]).name)
        lines.append(f"{attribute}: {summary}; output_proj {info['projection']}")
    return lines


def spectrogram_image(wav: np.ndarray, sample_rate: int, height: int = 160, width: int = 640) -> np.ndarray:
    """[C, S] or [S] audio -> [height, width, 3] uint8 log-magnitude spectrogram (low frequencies at the bottom)."""
    mono = torch.as_tensor(np.asarray(wav, dtype=np.float32).reshape(-1, np.shape(wav)[-1]).mean(0))
    n_fft = 512
    if mono.numel() < n_fft:
        mono = torch.nn.functional.pad(mono, (0, n_fft - mono.numel()))
    spec = torch.stft(mono, n_fft, hop_length=max(sample_rate // 100, 1), window=torch.hann_window(n_fft),
                      return_complex=True).abs()
    db = 20 * torch.log10(spec + 1e-5)
    db = ((db - (db.max() - 80)) / 80).clamp(0, 1)  # an 80 dB range below the loudest bin
    db = torch.nn.functional.interpolate(db[None, None], size=(height, width), mode="bilinear")[0, 0]
    level = db.flip(0).numpy()
    # A dark-blue -> orange -> yellow ramp: loud bins stand out on a dark background.
    stops = np.array([[12, 7, 45], [120, 28, 109], [237, 105, 37], [252, 255, 164]], dtype=np.float32)
    position = level * (len(stops) - 1)
    low = np.clip(position.astype(int), 0, len(stops) - 2)
    frac = (position - low)[..., None]
    return (stops[low] * (1 - frac) + stops[low + 1] * frac).astype(np.uint8)


def score_clip(prompt: str, clip: Clip) -> list[list[str]]:
    """Rows [attribute, asked for, heard, match] of the world analyzers on a world-model clip."""
    from ..world.analyze import analyze
    from ..world.captions import parse_caption
    from ..world.synth import SAMPLE_RATE

    if clip.sample_rate != SAMPLE_RATE or clip.wav.shape[0] != 1:
        raise ValueError(f"the world analyzers read {SAMPLE_RATE} Hz mono world clips; {clip.model!r} makes "
                         f"{clip.sample_rate} Hz audio with {clip.wav.shape[0]} channel(s)")
    heard = analyze(clip.wav[0])
    asked = parse_caption(prompt)
    return [[name, asked.get(name, "-"), value, "" if name not in asked else "yes" if asked[name] == value else "no"]
            for name, value in heard.items()]


def write_wav(clip: Clip, folder: Path) -> Path:
    """Write `clip` under `folder` with a fresh name (never overwriting) and return the path."""
    from ..data.audio import audio_write

    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{clip.model.replace('/', '_').strip('._') or 'clip'}-{time.time_ns()}"
    # normalize=False only scales down what would clip: loud and quiet stay audibly different.
    return audio_write(stem, torch.from_numpy(clip.wav), clip.sample_rate, normalize=False)
