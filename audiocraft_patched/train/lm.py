"""Train a small MusicGen LM on world clips encoded by the world codec; export a model folder.

Upstream trains the LM with `audiocraft/solvers/musicgen.py`: cross-entropy of
`LMModel.compute_predictions` on EnCodec codes laid out by the delay pattern, classifier-free
guidance dropout of the whole batch, word dropout in a frozen T5 conditioner. This is the same
recipe, on our own `LMModel`, at a size that trains on one CPU thread in well under an hour.
The frozen conditioner is a small random T5 (`make_world_t5`) with a sentencepiece tokenizer
trained on the world's training captions: random encoder weights still carry which words a
caption holds, and the LM learns `output_proj` and the cross-attention on top, as it does on
the released models' frozen t5-base.

The folder it writes is the embedded default's format: `state_dict.bin`,
`compression_state_dict.bin` and the encoder folder `t5/`, which the config names `./t5`
(resolved against the checkpoint folder by `models/loaders.py`).

    python -m audiocraft_patched.train.lm --codec runs/codec --out runs/world-musicgen --steps 2500
"""
from __future__ import annotations

import argparse
import copy
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..align.losses import lm_cross_entropy
from ..models.builders import get_lm_model
from ..models.loaders import COMPRESSION_FILE, LM_FILE, load_compression_model, load_lm_model_ckpt
from ..modules.conditioners import ConditioningAttributes
from ..utils.export import copy_file, copy_folder, save_checkpoint, save_torch
from ..utils.tiny import tiny_musicgen_config, train_sentencepiece
from ..world.captions import all_captions, caption, vocabulary
from ..world.synth import CLIP_SECONDS, Attributes, random_attributes, render
from .codec import warmup_cosine

ENCODER_DIR = "t5"
ENCODER_NAME = "./t5"  # what the config records: relative to the checkpoint folder


def make_world_t5(folder: str | Path, d_model: int = 128, num_layers: int = 2, num_heads: int = 4, d_kv: int = 32,
                  d_ff: int = 256, seed: int = 0) -> Path:
    """Write a random T5 encoder whose tokenizer is trained on the world's training captions."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    texts = all_captions("train")
    texts = [texts[i] for i in rng.choice(len(texts), 3000, replace=False)] + vocabulary()
    with tempfile.TemporaryDirectory() as tmp:
        train_sentencepiece(Path(tmp), texts, vocab_size=200)
        tokenizer = T5Tokenizer.from_pretrained(tmp, extra_ids=0)
        tokenizer.save_pretrained(folder)
    config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=num_layers,
                      num_heads=num_heads, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)
    torch.manual_seed(seed)
    T5EncoderModel(config).eval().save_pretrained(folder)
    return folder


def world_lm_config(encoder: str, dim: int = 128, num_layers: int = 4, num_heads: int = 4, n_q: int = 4,
                    card: int = 128, seconds: float = CLIP_SECONDS, word_dropout: float = 0.2,
                    cfg_dropout: float = 0.3) -> dict:
    """Upstream's MusicGen `xp.cfg` shape for the world LM (16 kHz mono, delay pattern, cross-attention)."""
    cfg = tiny_musicgen_config(encoder, dim=dim, num_layers=num_layers, num_heads=num_heads, n_q=n_q, card=card,
                               sample_rate=16000, segment_duration=seconds)
    cfg["conditioners"]["description"]["t5"]["word_dropout"] = word_dropout
    cfg["classifier_free_guidance"]["training_dropout"] = cfg_dropout
    return cfg


@torch.no_grad()
def encode_dataset(codec, n_clips: int, seconds: float, seed: int, batch: int = 32
                   ) -> tuple[torch.Tensor, list[Attributes]]:
    """Render `n_clips` random clips and encode them: ([N, K, T] codes, N attribute sets)."""
    rng = np.random.default_rng(seed)
    attrs = [random_attributes(rng) for _ in range(n_clips)]
    seeds = rng.integers(0, 2 ** 31, n_clips)
    codes = []
    for i in range(0, n_clips, batch):
        wav = np.stack([render(a, int(s), seconds) for a, s in zip(attrs[i:i + batch], seeds[i:i + batch])])
        codes.append(codec.encode(torch.from_numpy(wav)[:, None])[0])
    return torch.cat(codes), attrs


def lm_loss(lm, codes: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """Mean over codebooks of the cross-entropy of `codes` [B, K, T] given their captions."""
    conditions = [ConditioningAttributes(text={"description": t}) for t in texts]
    out = lm.compute_predictions(codes, conditions)
    return lm_cross_entropy(out.logits, codes, out.mask)  # the one MusicGen loss (align/losses.py)


def export_model(lm, cfg: dict, codec_dir: Path, encoder_dir: Path, out: Path) -> Path:
    """Write `out/` as a model folder: LM export, codec export, and the encoder under `t5/`."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    cfg["conditioners"]["description"]["t5"]["name"] = ENCODER_NAME
    state = {k: v.detach().clone() for k, v in lm.state_dict().items()}
    save_checkpoint(out / LM_FILE, state, cfg, overwrite=True)  # exported again every `export_every` steps
    copy_file(Path(codec_dir) / COMPRESSION_FILE, out / COMPRESSION_FILE, overwrite=True)
    if Path(encoder_dir).resolve() != (out / ENCODER_DIR).resolve():
        copy_folder(encoder_dir, out / ENCODER_DIR, overwrite=True)
    return out


def train_lm(out: Path, codec_dir: Path, steps: int = 2500, seed: int = 0, batch: int = 12, lr: float = 1e-3,
             n_clips: int = 4000, seconds: float = CLIP_SECONDS, log_every: int = 50, export_every: int = 250,
             init: Path | None = None, **config) -> torch.nn.Module:
    """Train the world LM and export the whole model folder to `out`; returns the LM in eval mode.

    `init`: a world model folder to start from (its LM weights and its text encoder), e.g. to
    follow a new codec whose codes stay close to the old one's.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if init is not None and not (out / ENCODER_DIR / "config.json").is_file():
        copy_folder(Path(init) / ENCODER_DIR, out / ENCODER_DIR)  # the LM learned on this encoder
    torch.manual_seed(seed)
    random.seed(seed)  # the conditioner's word dropout draws from Python's global RNG
    rng = np.random.default_rng(seed)
    codec = load_compression_model(codec_dir)
    encoder_dir = out / ENCODER_DIR
    if not (encoder_dir / "config.json").is_file():
        make_world_t5(encoder_dir, seed=seed)
    cache = out / "dataset.pt"  # the encoded clips, to restart without re-encoding
    if cache.is_file():
        data = torch.load(cache, weights_only=True)
        codes, attrs = data["codes"], [Attributes(*a) for a in data["attrs"]]
    else:
        start = time.time()
        codes, attrs = encode_dataset(codec, n_clips, seconds, seed)
        save_torch({"codes": codes, "attrs": [list(a.as_dict().values()) for a in attrs]}, cache)
        print(f"encoded {len(attrs)} clips to {tuple(codes.shape)} in {time.time() - start:.0f} s", flush=True)
    cfg = world_lm_config(str(encoder_dir), n_q=codec.num_codebooks, card=codec.cardinality, seconds=seconds,
                          **config)
    torch.manual_seed(seed)
    lm = get_lm_model(copy.deepcopy(cfg))
    if init is not None:
        lm.load_state_dict(load_lm_model_ckpt(Path(init))["best_state"])
    params = [p for p in lm.parameters() if p.requires_grad]
    print(f"LM: {sum(p.numel() for p in params) / 1e6:.2f}M trainable parameters", flush=True)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
    lm.train()
    start, running = time.time(), []
    for step in range(1, steps + 1):
        idx = rng.choice(len(attrs), batch, replace=False)
        texts = [caption(attrs[i], rng, "train") for i in idx]
        loss = lm_loss(lm, codes[torch.from_numpy(idx)], texts)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % log_every == 0 or step == steps:
            print(f"lm step {step}/{steps} loss {np.mean(running):.4f} ({time.time() - start:.0f} s)", flush=True)
            running = []
        if step % export_every == 0 or step == steps:
            export_model(lm, cfg, codec_dir, encoder_dir, out)
    return lm.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codec", type=Path, required=True, help="folder with the codec's compression_state_dict.bin")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clips", type=int, default=4000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--init", type=Path, default=None, help="start from this world model folder's LM and encoder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_lm(args.out, args.codec, args.steps, args.seed, args.batch, args.lr, args.clips, log_every=args.log_every,
             init=args.init, dim=args.dim, num_layers=args.layers)


if __name__ == "__main__":
    main()
