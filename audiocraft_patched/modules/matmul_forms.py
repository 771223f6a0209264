"""`MatmulForms`: which form the few-row products of a generation step take, as explicit state.

No upstream counterpart (upstream always calls `F.linear`). A generation step multiplies a few
rows (batch x 2 for CFG) by every weight matrix, so its cost is streaming the weights from
memory, and which form streams them faster depends on the BLAS, the CPU and the dtype. Measured
on an AVX-512 Xeon (2 threads): fp32 at 2 rows, `F.linear` 41 GB/s vs `W @ x.T` 20; at 8 rows
14 vs 20; bf16 at 2 rows 27 vs 39 (an EPYC showed the opposite in fp32). The forms differ in
rounding, so the choice decides numerics: each `StreamingTransformer` holds its own
`MatmulForms` (shared with its layers), `inspect` shows it, and it can be set by hand or kept
from measuring (`measure=False`) for results that do not depend on a timing.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

FormKey = tuple  # (rows, dtype, device type, threads)


class MatmulForms:
    """The product form per (rows, dtype, device type, threads): True for `W @ x.T`, False for `F.linear(x, W)`.

    A key not in `forms` uses `F.linear` (upstream's form).

    Args:
        forms: initial choices, {key: w_at_x}.
        measure: let `choose` time the two forms for a key it does not know (CPU only); False
            keeps `forms` as given.
    """

    def __init__(self, forms: dict[FormKey, bool] | None = None, measure: bool = True):
        self.forms: dict[FormKey, bool] = dict(forms or {})
        self.measure = measure

    @staticmethod
    def key(rows: int, dtype: torch.dtype, device: torch.device) -> FormKey:
        return rows, dtype, device.type, torch.get_num_threads()

    def set(self, rows: int, dtype: torch.dtype, device: torch.device | str, w_at_x: bool) -> None:
        """Fix the form of `rows`-row products in `dtype` on `device` (with the current thread count)."""
        self.forms[self.key(rows, dtype, torch.device(device))] = bool(w_at_x)

    def choose(self, weights: list[torch.Tensor], rows: int, reps: int = 5) -> bool:
        """The form for `rows` rows over `weights`, timed once per key when `measure` allows it.

        Timed over several matrices so that they stream from memory as in a real step (one would
        sit in cache), alternating the forms and comparing medians.
        """
        weight = weights[0]
        key = self.key(rows, weight.dtype, weight.device)
        if key in self.forms or not self.measure:
            return self.forms.get(key, False)
        if weight.device.type != "cpu":
            self.forms[key] = False
            return False
        # A private generator: sampling after this must see the global RNG untouched.
        x = torch.randn(rows, weight.shape[1], generator=torch.Generator().manual_seed(0)).to(weight.dtype)
        times: dict[bool, list[float]] = {False: [], True: []}
        with torch.no_grad():
            for _ in range(reps):
                for form in (False, True):
                    start = time.perf_counter()
                    for w in weights:
                        (w @ x.T) if form else F.linear(x, w)
                    times[form].append(time.perf_counter() - start)
        # `W @ x.T` only when clearly faster: a tie keeps upstream's form (and its rounding).
        self.forms[key] = statistics.median(times[True]) < 0.9 * statistics.median(times[False])
        return self.forms[key]

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """`F.linear(x, weight, bias)`, in the form chosen for this many rows (`F.linear` when none is)."""
        rows = x.numel() // x.shape[-1]
        if x.requires_grad or not self.forms.get(self.key(rows, x.dtype, x.device), False):
            return F.linear(x, weight, bias)
        out = (weight @ x.reshape(rows, -1).T).T
        if bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], weight.shape[0])

    def describe(self) -> str:
        """For `inspect`: the choices made so far."""
        mode = "measured at the first generation of each shape" if self.measure else "fixed"
        if not self.forms:
            return f"F.linear everywhere so far ({mode})"
        chosen = ", ".join(f"{rows} rows {str(dtype).replace('torch.', '')} {device} {threads} threads: "
                           f"{'W @ x.T' if w_at_x else 'F.linear'}"
                           for (rows, dtype, device, threads), w_at_x in sorted(self.forms.items(), key=str))
        return f"{chosen} ({mode})"


PLAIN = MatmulForms(measure=False)  # `F.linear` always: the default of layers outside a transformer
