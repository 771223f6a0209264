"""Check a device name against the devices this torch build has, before anything is loaded onto it.

No upstream counterpart: upstream passes the name to torch, and `--device cuda` on a CPU-only
build ends in `AssertionError: Torch not compiled with CUDA enabled` from deep inside a load,
`--device foo` in a RuntimeError listing every device type torch knows of.
"""
from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """The devices usable here: 'cpu', then 'cuda:N' / 'mps' when this build and machine have them."""
    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def check_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device, or a ValueError naming the devices this torch has."""
    have = available_devices()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r}; devices here: {', '.join(have)}") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda":
        ok = parsed.index is None and len(have) > 1 and have[1].startswith("cuda") or f"cuda:{parsed.index}" in have
    else:
        ok = parsed.type in have
    if not ok:
        build = "" if torch.cuda.is_available() or parsed.type != "cuda" else \
            f" (this torch {torch.__version__} has no CUDA)" if torch.version.cuda is None else " (no GPU visible)"
        raise ValueError(f"device {str(device)!r} is not available{build}; devices here: {', '.join(have)}")
    return parsed
