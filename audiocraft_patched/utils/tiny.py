"""Tiny models built offline in seconds: a T5 encoder with its tokenizer, and a whole MusicGen.

They have random weights: they exercise every code path (tests, benchmarks of shapes) without
downloading anything. Checkpoints are written in upstream's export format (by `utils.export`), so
upstream audiocraft loads them too.
"""
from __future__ import annotations

import copy
import itertools
import random
import tempfile
from pathlib import Path

import torch

GENRES = ["rock", "jazz", "techno", "ambient", "folk", "hip hop", "classical", "reggae", "metal", "lo-fi"]
INSTRUMENTS = ["piano", "guitar", "drums", "violin", "synth", "bass", "flute", "trumpet", "organ", "cello"]
MOODS = ["calm", "energetic", "dark", "happy", "melancholic", "epic", "dreamy", "groovy"]
TEMPLATES = ["{mood} {genre} with {inst}", "a {mood} {inst} solo", "{genre} track, {inst} and {inst2}, {mood}",
             "slow {genre} tune played on {inst}", "fast {mood} {genre} beat at 120 bpm"]


def captions(n: int = 400, seed: int = 0) -> list[str]:
    """Music captions from templates (the tokenizer's training text and test prompts)."""
    rng = random.Random(seed)
    return [rng.choice(TEMPLATES).format(mood=rng.choice(MOODS), genre=rng.choice(GENRES),
                                         inst=rng.choice(INSTRUMENTS), inst2=rng.choice(INSTRUMENTS))
            for _ in range(n)]


def train_sentencepiece(folder: Path, texts: list[str], vocab_size: int = 300) -> Path:
    """Train a unigram sentencepiece model with T5's special ids (pad 0, eos 1, unk 2)."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "spiece"), vocab_size=vocab_size, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, character_coverage=1.0,
        minloglevel=2, num_threads=1)
    corpus.unlink()
    return folder / "spiece.model"


def make_tiny_t5(folder: str | Path, d_model: int = 32, num_layers: int = 2, num_heads: int = 4, d_kv: int = 8,
                 d_ff: int = 64, seed: int = 0) -> Path:
    """Write a random T5 encoder + tokenizer (loadable by `T5EncoderModel`/`T5Tokenizer.from_pretrained`).

    `d_model` may be large (e.g. t5-base's 768) at little cost: heads * d_kv and d_ff set the
    size of the layers.
    """
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        train_sentencepiece(Path(tmp), captions() + list(itertools.chain(GENRES, INSTRUMENTS, MOODS)))
        tokenizer = T5Tokenizer.from_pretrained(tmp, extra_ids=0)
        tokenizer.save_pretrained(folder)
    config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=d_kv, d_ff=d_ff,
                      num_layers=num_layers, num_heads=num_heads, relative_attention_num_buckets=8,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(seed)
    T5EncoderModel(config).eval().save_pretrained(folder)
    return folder


def tiny_musicgen_config(encoder: str, dim: int = 32, num_layers: int = 2, num_heads: int = 4, n_q: int = 4,
                         card: int = 64, sample_rate: int = 16000, channels: int = 1,
                         segment_duration: float = 10.0, stereo: bool = False) -> dict:
    """An `xp.cfg` in upstream's shape (musicgen_lm + text2music + encodec), made small.

    Stereo follows musicgen-stereo: a mono codec applied per channel, codebooks interleaved,
    so the LM models 2 * n_q codebooks.
    """
    lm_q = 2 * n_q if stereo else n_q
    return {
        "device": "cpu", "dtype": "float32", "sample_rate": sample_rate, "channels": 2 if stereo else channels,
        "dataset": {"segment_duration": segment_duration},
        "lm_model": "transformer_lm",
        "codebooks_pattern": {"modeling": "delay", "delay": {"delays": list(range(lm_q)), "flatten_first": 0,
                                                             "empty_initial": 0}},
        "transformer_lm": {
            "dim": dim, "num_heads": num_heads, "num_layers": num_layers, "hidden_scale": 4, "n_q": lm_q,
            "card": card, "dropout": 0.0, "emb_lr": None, "activation": "gelu", "norm_first": True,
            "bias_ff": False, "bias_attn": False, "bias_proj": False, "past_context": None, "causal": True,
            "custom": False, "memory_efficient": True, "attention_as_float32": False, "layer_scale": None,
            "positional_embedding": "sin", "xpos": False, "checkpointing": "none", "weight_init": "gaussian",
            "depthwise_init": "current", "zero_bias_init": True, "norm": "layer_norm", "cross_attention": False,
            "qk_layer_norm": False, "qk_layer_norm_cross": False, "attention_dropout": None, "kv_repeat": 1,
            "two_step_cfg": False},
        "classifier_free_guidance": {"training_dropout": 0.3, "inference_coef": 3.0},
        "attribute_dropout": {},
        "fuser": {"cross_attention_pos_emb": False, "cross_attention_pos_emb_scale": 1, "sum": [], "prepend": [],
                  "cross": ["description"], "input_interpolate": []},
        "conditioners": {"description": {"model": "t5", "t5": {"name": str(encoder), "finetune": False,
                                                               "word_dropout": 0.3, "normalize_text": False}}},
        "interleave_stereo_codebooks": {"use": stereo, "per_timestep": False},
        "compression_model_n_q": None,
    }


def tiny_encodec_config(sample_rate: int = 16000, channels: int = 1, n_q: int = 4, card: int = 64,
                        ratios: tuple[int, ...] = (8, 5, 4, 2)) -> dict:
    """Upstream's encodec/default.yaml, made small (default hop 320: 50 frames/s at 16 kHz)."""
    return {
        "device": "cpu", "dtype": "float32", "sample_rate": sample_rate, "channels": channels,
        "compression_model": "encodec",
        "encodec": {"autoencoder": "seanet", "quantizer": "rvq", "sample_rate": sample_rate, "channels": channels,
                    "causal": False, "renormalize": False},
        "seanet": {"dimension": 16, "channels": channels, "causal": False, "n_filters": 4, "n_residual_layers": 1,
                   "ratios": list(ratios), "activation": "ELU", "activation_params": {"alpha": 1.0},
                   "norm": "weight_norm", "norm_params": {}, "kernel_size": 7, "residual_kernel_size": 3,
                   "last_kernel_size": 7, "dilation_base": 2, "pad_mode": "constant", "true_skip": True,
                   "compress": 2, "lstm": 2, "disable_norm_outer_blocks": 0,
                   "decoder": {"trim_right_ratio": 1.0, "final_activation": None, "final_activation_params": None},
                   "encoder": {}},
        "rvq": {"n_q": n_q, "q_dropout": False, "bins": card, "decay": 0.99, "kmeans_init": True,
                "kmeans_iters": 50, "threshold_ema_dead_code": 2, "orthogonal_reg_weight": 0.0,
                "orthogonal_reg_active_codes_only": False},
    }


def save_export(path: Path, state: dict, cfg: dict, overwrite: bool = False) -> Path:
    """Write `{'best_state', 'xp.cfg', 'version', 'exported'}` as upstream's export does (atomically)."""
    from .export import save_checkpoint

    return save_checkpoint(path, state, cfg, overwrite=overwrite)


def randomize_codebooks(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Give RVQ codebooks random (initialised) entries, so codes are not all equal."""
    for name, buf in model.named_buffers():
        if name.endswith("embed") or name.endswith("embed_avg"):
            buf.copy_(torch.randn(buf.shape, generator=generator))
        elif name.endswith("inited"):
            buf.fill_(1)


def randomize_weights(lm: torch.nn.Module, codec: torch.nn.Module, seed: int) -> None:
    """Random RVQ codebooks, and LM weights moved off their near-uniform init so conditioning matters."""
    gen = torch.Generator().manual_seed(seed)
    randomize_codebooks(codec, gen)
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def make_tiny_musicgen(folder: str | Path, encoder: str | Path, seed: int = 0, record_encoder_as: str | None = None,
                       ratios: tuple[int, ...] = (8, 5, 4, 2), **lm_kwargs) -> Path:
    """Write a random tiny MusicGen export (`state_dict.bin` + `compression_state_dict.bin`) to `folder`.

    `encoder` is loaded to build the model; the config names it `record_encoder_as` if given
    (for a folder that is moved after the build).
    """
    from ..models.builders import get_compression_model, get_lm_model

    folder = Path(folder)
    stereo = lm_kwargs.get("stereo", False)
    lm_cfg = tiny_musicgen_config(str(encoder), **lm_kwargs)
    codec_cfg = tiny_encodec_config(lm_cfg["sample_rate"], 1 if stereo else lm_cfg["channels"],
                                    n_q=lm_cfg["transformer_lm"]["n_q"] // (2 if stereo else 1),
                                    card=lm_cfg["transformer_lm"]["card"], ratios=ratios)
    torch.manual_seed(seed)
    lm = get_lm_model(copy.deepcopy(lm_cfg))
    codec = get_compression_model(copy.deepcopy(codec_cfg))
    randomize_weights(lm, codec, seed)
    if record_encoder_as is not None:
        lm_cfg["conditioners"]["description"]["t5"]["name"] = record_encoder_as
    save_export(folder / "state_dict.bin", lm.state_dict(), lm_cfg)
    save_export(folder / "compression_state_dict.bin", codec.state_dict(), codec_cfg)
    return folder
