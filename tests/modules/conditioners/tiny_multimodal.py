"""Tiny random CLIP, SigLIP and CLAP folders, drawn images and MusicGen exports with image / audio conditioners.

Built offline in about a second each: configs with 1-2 layers of width 16, tokenizers trained on
template captions with `tokenizers`, image processors and feature extractors saved beside the
weights, as `save_pretrained` writes a real model folder.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from audiocraft_patched.utils.tiny import captions, randomize_codebooks, save_export
from audiocraft_patched.utils.tiny import tiny_encodec_config, tiny_musicgen_config

VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32,
              patch_size=8)  # 16 patches
TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
# HTSAT made small: 64 mel bins (the fusion code hard-codes 64), a 64 x 64 spectrogram image, 1 s windows at 16 kHz.
AUDIO = dict(spec_size=64, num_mel_bins=64, patch_size=4, patch_stride=4, window_size=4, depths=[1, 1],
             num_attention_heads=[2, 2], patch_embeds_hidden_size=8, hidden_size=16, num_hidden_layers=2)
CLAP_RATE = 16000


def _bpe(specials: list[str], suffix: str | None = None):
    """A byte-level BPE trained on captions: (vocab, merges)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(end_of_word_suffix=suffix) if suffix else models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=specials, show_progress=False,
                                  **({"end_of_word_suffix": suffix} if suffix else {}))
    tok.train_from_iterator(captions(200), trainer)
    data = json.loads(tok.to_str())["model"]
    return data["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in data["merges"]]


def make_clip(folder: Path, seed: int = 0) -> Path:
    """A CLIPModel (text + vision, projection 12) with its tokenizer and image processor."""
    import transformers as T

    vocab, merges = _bpe(["<|startoftext|>", "<|endoftext|>"], suffix="</w>")
    tokenizer = T.CLIPTokenizer(vocab=vocab, merges=merges)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    config = T.CLIPConfig(text_config=dict(vocab_size=len(tokenizer), max_position_embeddings=64, **TEXT, **ids),
                          vision_config=VISION, projection_dim=12)
    torch.manual_seed(seed)
    T.CLIPModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    T.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def make_siglip(folder: Path, seed: int = 0) -> Path:
    """A SiglipModel with its image processor (no tokenizer: only the vision tower is used)."""
    import transformers as T

    config = T.SiglipConfig(text_config=dict(vocab_size=64, max_position_embeddings=16, **TEXT), vision_config=VISION)
    torch.manual_seed(seed)
    T.SiglipModel(config).eval().save_pretrained(folder)
    T.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def make_vit(folder: Path, seed: int = 0) -> Path:
    """A ViTModel (a vision model of its own, no joint space) with its image processor."""
    import transformers as T

    config = T.ViTConfig(**{k: v for k, v in VISION.items()})
    torch.manual_seed(seed)
    T.ViTModel(config).eval().save_pretrained(folder)
    T.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def make_clap(folder: Path, fusion: bool = False, seed: int = 0) -> Path:
    """A ClapModel (RoBERTa-like text + HTSAT audio, projection 12), tokenizer and 16 kHz feature extractor."""
    import transformers as T

    vocab, merges = _bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer = T.RobertaTokenizer(vocab=vocab, merges=merges)
    text = dict(vocab_size=len(tokenizer), max_position_embeddings=66, pad_token_id=1, **TEXT)
    config = T.ClapConfig(text_config=text, audio_config=dict(AUDIO, enable_fusion=fusion), projection_dim=12)
    torch.manual_seed(seed)
    T.ClapModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    T.ClapFeatureExtractor(feature_size=64, sampling_rate=CLAP_RATE, hop_length=320, max_length_s=1,
                           fft_window_size=640, frequency_max=8000,
                           truncation="fusion" if fusion else "rand_trunc").save_pretrained(folder)
    return folder


def draw(kind: str, size: tuple[int, int] = (48, 40), mode: str = "RGB"):
    """A small PIL drawing: 'sun' (yellow disc on blue), 'stripes' (red/white) or 'dark' (a grey square)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, {"sun": (40, 80, 200), "stripes": (255, 255, 255), "dark": (10, 10, 10)}[kind])
    pen = ImageDraw.Draw(image)
    if kind == "sun":
        pen.ellipse((10, 8, 34, 32), fill=(250, 220, 30))
    elif kind == "stripes":
        for x in range(0, size[0], 8):
            pen.rectangle((x, 0, x + 3, size[1]), fill=(220, 20, 20))
    else:
        pen.rectangle((12, 12, 30, 30), fill=(120, 120, 120))
    return image.convert(mode)


def tone(freq: float, seconds: float, rate: int, channels: int = 1) -> torch.Tensor:
    """A sine [channels, seconds * rate] at amplitude 0.5."""
    t = torch.arange(int(seconds * rate)) / rate
    return (0.5 * torch.sin(2 * torch.pi * freq * t)).expand(channels, -1).clone()


_TOWERS: dict[str, Path] = {}


def tower_folders(tmp_path_factory) -> dict[str, Path]:
    """Folders of a tiny CLIP, SigLIP, ViT and CLAP, built once per test session."""
    if not _TOWERS:
        root = tmp_path_factory.mktemp("towers")
        _TOWERS.update(clip=make_clip(root / "clip"), siglip=make_siglip(root / "siglip"), vit=make_vit(root / "vit"),
                       clap=make_clap(root / "clap"))
    return _TOWERS


T5_DESCRIPTION = {"model": "t5", "t5": {"name": "t5-base", "finetune": False, "word_dropout": 0.0,
                                        "normalize_text": False}}  # the conftest's tiny T5 in the HF cache


def make_multimodal_musicgen(folder: Path, conditioners: dict[str, dict], fuser: dict[str, list[str]],
                             seed: int = 0):
    """A random tiny MusicGen export with these conditioners / fuser lists: (folder, the LM as built)."""
    from audiocraft_patched.models.builders import get_compression_model, get_lm_model

    cfg = tiny_musicgen_config("t5-base", segment_duration=18.5)
    cfg["conditioners"] = conditioners
    cfg["fuser"].update({"cross": [], "prepend": [], "sum": []})
    cfg["fuser"].update(fuser)
    codec_cfg = tiny_encodec_config(ratios=(8, 5, 4, 4))
    torch.manual_seed(seed)
    lm = get_lm_model(copy.deepcopy(cfg))
    codec = get_compression_model(copy.deepcopy(codec_cfg))
    generator = torch.Generator().manual_seed(seed)
    randomize_codebooks(codec, generator)
    with torch.no_grad():  # peaky logits, so that different conditions give different tokens
        for p in lm.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    save_export(folder / "state_dict.bin", lm.state_dict(), cfg)
    save_export(folder / "compression_state_dict.bin", codec.state_dict(), codec_cfg)
    return folder, lm.eval()
