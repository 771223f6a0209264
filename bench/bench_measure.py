"""Measuring for the bench: interleaved wall-clock timing, medians, and resident memory.

The machine is shared and noisy, so implementations are never timed in blocks: each round
runs every implementation once, in an order rotated from round to round, and results are
medians over rounds. Peak memory is the resident-set high-water mark (`VmHWM`) of a fresh
process per implementation, read from /proc and reset between phases through
`/proc/self/clear_refs` (Linux).
"""
from __future__ import annotations

import os
import re
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

_STATUS = Path("/proc/self/status")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def interleave(runs: dict[str, Callable[[], Any]], reps: int, warmups: dict[str, Callable[[], Any]] | None = None,
               ) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Time each callable `reps` times, one of each per round, rotating the order.

    Args:
        runs: name -> callable to time.
        reps: rounds.
        warmups: name -> a cheaper call run once before timing (allocator, kernels, caches).
    Returns:
        (seconds per round by name, the output of each callable's first timed call).
    """
    for name, warm in (warmups or {}).items():
        warm()
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, Any] = {}
    for r in range(reps):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            out = runs[name]()
            times[name].append(time.perf_counter() - start)
            outputs.setdefault(name, out)
    return times, outputs


def agreement(tokens: torch.Tensor, reference: torch.Tensor) -> float:
    """Percentage of equal codes between two [B, K, T] tensors."""
    if tokens.shape != reference.shape:
        raise ValueError(f"cannot compare codes of shapes {tuple(tokens.shape)} and {tuple(reference.shape)}")
    return 100.0 * (tokens == reference).float().mean().item()


def find_embedding_cache(conditioner) -> str | None:
    """Name of an enabled embedding cache on a conditioner, if this build has one.

    The cache is another engineer's work in progress; the bench looks for any attribute whose
    name says cache and that is set, rather than coding against an API that may still change.
    """
    for name, value in vars(conditioner).items():
        if "cache" in name.lower() and value is not None and value is not False and not callable(value):
            return name
    return None


def conditioning_latency(conditioners: dict[str, Any], texts: list[str], reps: int) -> dict[str, dict]:
    """Latency (ms) of tokenize + encode for one text plus its CFG null (what `generate` asks for).

    Misses use a text not seen before in every round (`texts[:-1]`, all distinct); hits repeat
    `texts[-1]`, and are only reported for conditioners with an embedding cache (without one, a
    "hit" is a miss).
    """
    if len(set(texts)) != len(texts) or len(texts) < reps + 1:
        raise ValueError(f"need {reps + 1} distinct texts for {reps} rounds, got {len(set(texts))}")

    def encode(cond, text):
        with torch.no_grad():
            return cond(cond.tokenize([text, None]))

    runs = {}
    for name, cond in conditioners.items():
        # The same new text for every conditioner in a round: token counts, hence costs, match.
        runs[f"{name}/miss"] = lambda cond=cond, fresh=iter(texts[:-1]): encode(cond, next(fresh))
        if find_embedding_cache(cond) is not None:
            runs[f"{name}/hit"] = lambda cond=cond: encode(cond, texts[-1])
    warmups = {name: (lambda cond=cond: encode(cond, texts[-1])) for name, cond in conditioners.items()}
    times, _ = interleave(runs, reps, warmups)
    out = {}
    for name, cond in conditioners.items():
        cache = find_embedding_cache(cond)
        out[name] = {"miss_ms": 1e3 * median(times[f"{name}/miss"]),
                     "hit_ms": 1e3 * median(times[f"{name}/hit"]) if cache else None, "cache": cache}
    return out


def memory_status() -> dict[str, float]:
    """Current and peak resident memory of this process in MiB."""
    if _STATUS.is_file():
        text = _STATUS.read_text()
        return {key: int(re.search(rf"{key}:\s+(\d+)", text).group(1)) / 1024 for key in ("VmRSS", "VmHWM")}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    peak_mib = peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024
    return {"VmRSS": float("nan"), "VmHWM": peak_mib}


def reset_peak() -> bool:
    """Reset the high-water mark to the current RSS (Linux >= 4.0); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    import platform

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = found.group(1).strip() if found else cpu
    import transformers

    return {"cpu": cpu, "cpu_count": str(os.cpu_count()), "torch_threads": str(torch.get_num_threads()),
            "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}
