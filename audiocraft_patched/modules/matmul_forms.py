"""`MatmulForms`: which form the few-row products of a generation step take, as explicit state.

No upstream counterpart (upstream always calls `F.linear`). A generation step multiplies a few
rows (batch x 2 for CFG) by every weight matrix, so its cost is streaming the weights from
memory, and which form streams them faster depends on the BLAS, the CPU and the dtype. Measured
on an AVX-512 Xeon (2 threads): fp32 at 2 rows, `F.linear` 41 GB/s vs `W @ x.T` 20; at 8 rows
14 vs 20; bf16 at 2 rows 27 vs 39 (an EPYC showed the opposite in fp32). The forms differ in
rounding, so the choice decides numerics: each `StreamingTransformer` holds its own
`MatmulForms` (shared with its layers), `inspect` shows it, and it can be set by hand or kept
from measuring (`measure=False`) for results that do not depend on a timing.

Reproducibility: a timing race run on a loaded machine can pick another form (other rounding,
other tokens) than on a quiet one. So a form is timed once per machine and kept in a calibration
file (`calibration_path()`, keyed by CPU model, torch version, threads, rows, dtype and device);
every later process reads it instead of racing again. `AUDIOCRAFT_PATCHED_MATMUL` forces a form:
`linear` (`F.linear`), `wx` (`W @ x.T`), or `measure` (time again and replace the file's entry).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.atomic import atomic_write
from .weight_quant import QUANTIZED

FormKey = tuple  # (rows, dtype, device type, threads)
ENV = "AUDIOCRAFT_PATCHED_MATMUL"
_ENV_FORMS = {"linear": False, "wx": True}  # "measure": neither forced nor read from the file
_NAMES = {False: "F.linear", True: "W @ x.T"}
_FILE_VERSION = 1


def calibration_path() -> Path:
    """The calibration file: `$AUDIOCRAFT_PATCHED_HOME`, else `$XDG_CACHE_HOME/audiocraft_patched`,
    else `~/.cache/audiocraft_patched`, then `matmul_forms.json`."""
    home = os.environ.get("AUDIOCRAFT_PATCHED_HOME")
    if not home:
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "audiocraft_patched"
    return Path(home) / "matmul_forms.json"


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo` on Linux, else `platform`): part of the calibration key."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def forced_form() -> bool | None:
    """The form `AUDIOCRAFT_PATCHED_MATMUL` forces (True: `W @ x.T`), None when unset or `measure`."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("", "measure"):
        return None
    if value not in _ENV_FORMS:
        raise ValueError(f"{ENV}={value!r} is not a matmul form; use linear (F.linear), wx (W @ x.T) or measure")
    return _ENV_FORMS[value]


def _file_key(key: FormKey) -> str:
    rows, dtype, device, threads = key
    return (f"{cpu_model()} | torch {torch.__version__} | {threads} threads | {rows} rows | "
            f"{str(dtype).replace('torch.', '')} | {device}")


class Calibration:
    """The calibration file: {file key: "F.linear" | "W @ x.T"}, read and written whole, atomically.

    A file that cannot be read or parsed, or a folder that cannot be written, costs one warning
    (per `Calibration`) and the forms are then measured for this process only.
    """

    def __init__(self, path: Path | None = None):
        self.path = calibration_path() if path is None else Path(path)
        self.warned = False

    def _warn(self, message: str) -> None:
        if not self.warned:
            self.warned = True
            warnings.warn(f"matmul calibration {self.path}: {message}; the forms are measured in this process",
                          RuntimeWarning, stacklevel=4)

    def read(self) -> dict[str, bool]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            forms = data["forms"]
            if data.get("version") != _FILE_VERSION or not isinstance(forms, dict):
                raise ValueError(f"unknown layout (version {data.get('version')!r})")
            names = {name: form for form, name in _NAMES.items()}
            return {str(k): names[v] for k, v in forms.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            self._warn(f"unreadable ({type(error).__name__}: {error}); delete it to calibrate again")
            return {}

    def get(self, key: FormKey) -> bool | None:
        return self.read().get(_file_key(key))

    def put(self, key: FormKey, w_at_x: bool, replace: bool = False) -> bool:
        """Record the form for `key` and return the one the file now holds: an entry another
        process wrote meanwhile wins (unless `replace`), so all processes agree on one form."""
        if not self.warned:  # a file already found corrupt is left alone (and reported once)
            forms = self.read()
            name = _file_key(key)
            if name in forms and not replace:
                return forms[name]
            forms[name] = w_at_x
            if not self.warned:
                try:
                    self._write({k: _NAMES[v] for k, v in sorted(forms.items())})
                except OSError as error:
                    self._warn(f"not writable ({error})")
        return w_at_x

    def _write(self, forms: dict[str, str]) -> None:
        # Atomic, so a concurrent reader never sees half a file.
        text = json.dumps({"version": _FILE_VERSION, "forms": forms}, indent=1)
        atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True)


class MatmulForms:
    """The product form per (rows, dtype, device type, threads): True for `W @ x.T`, False for `F.linear(x, W)`.

    A key not in `forms` uses `F.linear` (upstream's form). `sources` says where each choice came
    from (shown by `describe`).

    Args:
        forms: initial choices, {key: w_at_x}.
        measure: let `choose` find the form of a key it does not know (CPU only): from
            `AUDIOCRAFT_PATCHED_MATMUL`, else the calibration file, else timed and saved there;
            False keeps `forms` as given.
        calibration: the calibration file (default: `calibration_path()`, resolved at first use).
    """

    def __init__(self, forms: dict[FormKey, bool] | None = None, measure: bool = True,
                 calibration: Calibration | None = None):
        self.forms: dict[FormKey, bool] = dict(forms or {})
        self.sources: dict[FormKey, str] = {key: "given" for key in self.forms}
        self.measure = measure
        self.calibration = calibration
        self.chosen_threads = torch.get_num_threads()  # the thread count of the last `choose` (see `linear`)

    @staticmethod
    def key(rows: int, dtype: torch.dtype, device: torch.device) -> FormKey:
        return rows, dtype, device.type, torch.get_num_threads()

    def set(self, rows: int, dtype: torch.dtype, device: torch.device | str, w_at_x: bool) -> None:
        """Fix the form of `rows`-row products in `dtype` on `device` (with the current thread count)."""
        key = self.key(rows, dtype, torch.device(device))
        self.forms[key] = bool(w_at_x)
        self.sources[key] = "set by hand"

    def choose(self, weights: list[torch.Tensor], rows: int, reps: int = 5) -> bool:
        """The form for `rows` rows over `weights`, found once per key when `measure` allows it."""
        weight = weights[0]
        self.chosen_threads = torch.get_num_threads()
        if isinstance(weight, QUANTIZED):  # quantized products have one form (weight_quant.py)
            return False
        key = self.key(rows, weight.dtype, weight.device)
        if key in self.forms or not self.measure:
            return self.forms.get(key, False)
        if weight.device.type != "cpu":
            self.forms[key], self.sources[key] = False, f"{weight.device.type}: upstream's form"
            return False
        forced = forced_form()
        if forced is not None:
            self.forms[key], self.sources[key] = forced, f"forced by {ENV}"
            return forced
        if self.calibration is None:
            self.calibration = Calibration()
        remeasure = os.environ.get(ENV, "").strip().lower() == "measure"
        saved = None if remeasure else self.calibration.get(key)
        if saved is not None:
            self.forms[key], self.sources[key] = saved, f"calibration {self.calibration.path}"
            return saved
        timed = self.time_forms(weights, rows, reps)
        self.forms[key] = self.calibration.put(key, timed, replace=remeasure)
        where = "this process only" if self.calibration.warned else f"saved to {self.calibration.path}"
        self.sources[key] = f"measured ({where})"
        return self.forms[key]

    @staticmethod
    def time_forms(weights: list[torch.Tensor], rows: int, reps: int = 5) -> bool:
        """True when `W @ x.T` is clearly faster than `F.linear` for `rows` rows over `weights`.

        Timed over several matrices so that they stream from memory as in a real step (one would
        sit in cache), alternating the forms and comparing medians.
        """
        # A private generator: sampling after this must see the global RNG untouched.
        x = torch.randn(rows, weights[0].shape[1], generator=torch.Generator().manual_seed(0)).to(weights[0].dtype)
        times: dict[bool, list[float]] = {False: [], True: []}
        with torch.no_grad():
            for _ in range(reps):
                for form in (False, True):
                    start = time.perf_counter()
                    for w in weights:
                        (w @ x.T) if form else F.linear(x, w)
                    times[form].append(time.perf_counter() - start)
        # `W @ x.T` only when clearly faster: a tie keeps upstream's form (and its rounding).
        return statistics.median(times[True]) < 0.9 * statistics.median(times[False])

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """`F.linear(x, weight, bias)`, in the form chosen for this many rows (`F.linear` when none is);
        a quantized weight (`weight_quant.py`) multiplies in its own kernel."""
        if isinstance(weight, QUANTIZED):
            return weight.linear(x, bias)
        rows = x.numel() // x.shape[-1]
        # torch.compile cannot trace get_num_threads (a graph break per product): a compiled step
        # (LMModel.compile_step) looks its form up under the thread count `choose` saw at its start.
        threads = self.chosen_threads if torch.compiler.is_compiling() else torch.get_num_threads()
        if x.requires_grad or not self.forms.get((rows, x.dtype, x.device.type, threads), False):
            return F.linear(x, weight, bias)
        out = (weight @ x.reshape(rows, -1).T).T
        if bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], weight.shape[0])

    def describe(self) -> str:
        """For `inspect`: the choices made so far and where each came from."""
        if not self.measure:
            mode = "fixed"
        elif forced_form() is not None:
            mode = f"forced by {ENV}={os.environ[ENV].strip()}"
        else:
            path = self.calibration.path if self.calibration else calibration_path()
            mode = f"measured once per machine, kept in {path}"
        if not self.forms:
            return f"F.linear everywhere so far ({mode})"
        chosen = ", ".join(f"{rows} rows {str(dtype).replace('torch.', '')} {device} {threads} threads: "
                           f"{_NAMES[self.forms[(rows, dtype, device, threads)]]} "
                           f"[{self.sources.get((rows, dtype, device, threads), 'given')}]"
                           for (rows, dtype, device, threads) in sorted(self.forms, key=str))
        return f"{chosen} ({mode})"


PLAIN = MatmulForms(measure=False)  # `F.linear` always: the default of layers outside a transformer
