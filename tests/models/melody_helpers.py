"""Shared by the melody tests: a tiny melody config in the shape of upstream's, test melodies."""
import torch

from audiocraft_patched.utils.tiny import tiny_encodec_config, tiny_musicgen_config

SR = 32000
TEXTS = ["calm piano with soft drums", "fast techno beat at 120 bpm, synth and bass", None]


def melody_config(stereo: bool, match_len_on_eval: bool = False) -> tuple[dict, dict]:
    """(LM config, codec config): musicgen_melody_32khz's conditioning, tiny sizes."""
    cfg = tiny_musicgen_config("t5-base", sample_rate=SR, stereo=stereo, segment_duration=18.5)
    # As upstream's conditioner/chroma2music.yaml (radix2_exp 14: 16384-sample windows at 32 kHz).
    cfg["classifier_free_guidance"] = {"training_dropout": 0.2, "inference_coef": 3.0}
    cfg["attribute_dropout"] = {"args": {"active_on_eval": False}, "text": {}, "wav": {"self_wav": 0.5}}
    cfg["fuser"].update(prepend=["self_wav", "description"], cross=[])
    cfg["conditioners"] = {
        "self_wav": {"model": "chroma_stem", "chroma_stem": {
            "sample_rate": SR, "n_chroma": 12, "radix2_exp": 14, "argmax": True,
            "match_len_on_eval": match_len_on_eval, "eval_wavs": None, "n_eval_wavs": 100, "cache_path": None}},
        "description": {"model": "t5", "t5": {"name": "t5-base", "finetune": False, "word_dropout": 0.2,
                                              "normalize_text": False}},
    }
    codec = tiny_encodec_config(SR, 1, n_q=4, card=cfg["transformer_lm"]["card"], ratios=(8, 5, 4, 8))
    return cfg, codec


def composed_melody_config(overrides: tuple[str, ...] = ()):
    """upstream's own `solver=musicgen/musicgen_melody_32khz`, composed by hydra from its sdist's config tree."""
    from upstream_models import compose

    return compose("musicgen/musicgen_melody_32khz", overrides)


def melodies(channels: int = 1, seconds: float = 1.5) -> torch.Tensor:
    """Two melodies [2, C, T] at 32 kHz: note sequences over a low drone, and noise."""
    t = torch.arange(int(seconds * SR)) / SR
    notes = torch.tensor([261.63, 329.63, 392.0, 523.25])[(t * 4).long() % 4]
    tune = torch.sin(2 * torch.pi * torch.cumsum(notes, 0) / SR) + 0.5 * torch.sin(2 * torch.pi * 55 * t)
    noise = 0.3 * torch.randn(t.shape, generator=torch.Generator().manual_seed(4))
    return torch.stack([tune, noise])[:, None].expand(2, channels, t.numel()).contiguous()
