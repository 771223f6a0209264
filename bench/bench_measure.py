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


def interleave(runs: dict[str, Callable[[], Any]], reps: int,
               warmups: dict[str, Callable[[], Any]] | None = None) -> tuple[dict[str, list[float]], dict[str, Any]]:
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


def conditioning_latency(conditioners: dict[str, Any], texts: list[str], reps: int) -> dict[str, dict]:
    """Latency (ms) of tokenize + encode for one text plus its CFG null (what `generate` asks for).

    First without any cache (each round a text not seen before, the same one for every
    conditioner so that token counts match). Then, for conditioners with an embedding cache
    (`enable_cache`), with the cache on: a miss (another new text: encoder + store) and a hit
    (a text encoded before). The caches are switched off again afterwards.

    Args:
        conditioners: name -> conditioner (`tokenize` + `forward`).
        texts: at least 2 * reps + 1 distinct texts.
        reps: rounds.
    """
    if len(set(texts)) != len(texts) or len(texts) < 2 * reps + 1:
        raise ValueError(f"need {2 * reps + 1} distinct texts for {reps} rounds, got {len(set(texts))}")
    plain, cached, repeated = texts[:reps], texts[reps:2 * reps], texts[-1]

    def encode(cond, text):
        with torch.no_grad():
            return cond(cond.tokenize([text, None]))

    def misses(fresh: list[str], suffix: str) -> dict[str, Callable[[], Any]]:
        return {f"{name}/{suffix}": (lambda cond=cond, it=iter(fresh): encode(cond, next(it)))
                for name, cond in conditioners.items() if suffix == "plain" or hasattr(cond, "enable_cache")}

    warmups = {name: (lambda cond=cond: encode(cond, repeated)) for name, cond in conditioners.items()}
    times, _ = interleave(misses(plain, "plain"), reps, warmups)
    caching = {name: cond for name, cond in conditioners.items() if hasattr(cond, "enable_cache")}
    for cond in caching.values():
        cond.enable_cache()
    try:
        runs = {**misses(cached, "miss"), **{f"{name}/hit": (lambda cond=cond: encode(cond, repeated))
                                             for name, cond in caching.items()}}
        # The warm-up stores `repeated` (and pays the one-time encoder fingerprint).
        cached_times, _ = interleave(runs, reps, {n: warmups[n] for n in caching})
        times.update(cached_times)
    finally:
        for cond in caching.values():
            cond.disable_cache()

    def ms(key):
        return 1e3 * median(times[key]) if key in times else None

    return {name: {"miss_ms": ms(f"{name}/plain"), "cached_miss_ms": ms(f"{name}/miss"), "hit_ms": ms(f"{name}/hit")}
            for name in conditioners}


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


def load_average() -> float | None:
    """1-minute load average (processes wanting a CPU), where the platform has one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


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
