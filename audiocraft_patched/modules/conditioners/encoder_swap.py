"""A new text conditioner on another Hugging Face encoder, in place of an old one's projection.

No upstream counterpart. Both ways of swapping a MusicGen's text encoder use this: in memory
(`MusicGen.set_text_encoder`) and as a new checkpoint (`swap.swap_checkpoint`, which never builds
the LM and so holds only the old projection's weights). The projection to the LM width
(`output_proj`) is kept when the new encoder has the old one's width and `keep_projection` allows
it; otherwise it is new (nn.Linear's init, seeded). Which one happened is recorded in
`projection_origin` and in the config (`swapped_projection`), and shown by `inspect`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .hf_encoder import HFEncoderConditioner

KEEP_CHOICES = ("auto", True, False)


def encoder_name(name_or_dir: str | Path) -> str:
    """A folder is recorded as an absolute path (the checkpoint may be loaded from elsewhere)."""
    path = Path(name_or_dir).expanduser()
    return str(path.resolve()) if path.is_dir() else str(name_or_dir)


def decide_keep(keep_projection: str | bool, old_width: int | None, new: HFEncoderConditioner) -> bool:
    """Whether the old `output_proj` (taking `old_width`-wide states) is kept for `new`."""
    if keep_projection not in KEEP_CHOICES:
        raise ValueError(f"keep_projection must be 'auto', True or False, got {keep_projection!r}")
    if keep_projection is True and old_width != new.dim:
        raise ValueError(f"cannot keep output_proj: it takes {old_width}-wide encoder states, but {new.name!r} gives "
                         f"{new.dim}-wide ones; use keep_projection='auto' or False for a new projection")
    return keep_projection is True or (keep_projection == "auto" and old_width == new.dim)


def swapped_conditioner(name_or_dir: str | Path, output_dim: int, old_projection: dict[str, torch.Tensor] | None,
                        keep_projection: str | bool = "auto", seed: int | None = 0,
                        device: str | torch.device = "cpu", **kwargs) -> HFEncoderConditioner:
    """An `HFEncoderConditioner` on `name_or_dir` that keeps `old_projection` when it fits, or gets a new one.

    Args:
        name_or_dir: hub id (from the local cache when offline) or folder of the new encoder.
        output_dim: the LM width.
        old_projection: the old `output_proj` state dict ({'weight', 'bias'}), or None if it had none.
        keep_projection: 'auto' keeps it when the widths match, True insists (error otherwise),
            False always makes a new one.
        seed: seed of a new projection's init (None: the global RNG); the global RNG is left alone.
        device: where the encoder runs.
        **kwargs: the other options of `HFEncoderConditioner` (pooling, layer, max_length, ...).
    Returns:
        the conditioner, with `projection_origin` and `swapped_projection` set to 'kept' or 'new'.
    """
    new = HFEncoderConditioner(encoder_name(name_or_dir), output_dim=output_dim, device=device, **kwargs)
    old_width = None if old_projection is None else old_projection["weight"].shape[1]
    if decide_keep(keep_projection, old_width, new):
        new.output_proj.load_state_dict(old_projection)
        new.projection_origin = "kept"
    else:
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            new.output_proj.reset_parameters()
    new.swapped_projection = new.projection_origin
    return new
