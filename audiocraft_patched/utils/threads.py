"""Bounds for torch's thread count, as the CLI's `--threads` takes it.

No upstream counterpart. `torch.set_num_threads(100000)` segfaults inside OpenMP and a negative
count raises from deep inside torch; this turns both into an error that says what is allowed.
"""
from __future__ import annotations

import argparse
import os


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_threads(threads: int, allow_default: bool = True) -> int:
    """`threads` if 1 <= threads <= the available CPUs (or 0, "torch's default", if allowed), else ValueError."""
    cpus = available_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"threads must be a whole number, got {type(threads).__name__} {threads!r}")
    if (threads == 0 and allow_default) or 1 <= threads <= cpus:
        return threads
    default = "0 (torch's default) or " if allow_default else ""
    raise ValueError(f"threads must be {default}between 1 and {cpus} (the CPUs available here), got {threads}")


def thread_count(text: str) -> int:
    """argparse `type=` for --threads: 0 (torch's default) or 1..the available CPUs."""
    try:
        return check_threads(int(text))
    except ValueError as exc:
        message = str(exc) if text.strip().lstrip("+-").isdigit() else f"not a whole number: {text!r}"
        raise argparse.ArgumentTypeError(message) from None
