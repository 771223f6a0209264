"""Weight-only quantization of a transformer's linear layers: int8 per output channel, int4 grouped.

No upstream counterpart (upstream runs fp32/fp16 weights only). A generation step on CPU costs
streaming every weight from memory for a few rows (batch x 2 for CFG), so fewer bytes per weight
is the way past that floor. int8 and int4 quantize only the weights (activations stay in the
compute dtype); w8a8 and int8-dynamic quantize both.

- int8: `w ~= q * scale`, q in [-127, 127], one scale per output channel (row).
- int4: `w ~= (q - 8) * scale + zero`, q in [0, 15], one (scale, zero) per `group_size` inputs of
  a row (torch's int4 CPU kernel's convention: `zero = min + 8 * scale`).
- w8a8: int8's weights, and the activations quantized too at each product, one scale per row
  (`x ~= qx * absmax(x) / 127`), for the int8 x int8 -> int32 product (`torch._int_mm`), at the
  price of the activations' rounding. That kernel needs AVX-512 (VNNI) to be fast: on an AVX2 CPU
  it is ~10x slower than int8's, and quantizing warns (`fast_int_mm`). Its `qweight` is
  stored column-major (its transpose is contiguous: the kernel's layout), the same values and
  state-dict shapes as int8.
- int8-dynamic: int8's weights, and torch.ao's dynamic int8 arithmetic for the activations: one
  (scale, zero point) per product input, asymmetric over [0, 127] (7 bits: fbgemm's x86 default,
  whose u8 x s8 pair sums would saturate at 8 bits without VNNI), `quantize_dynamic_input`. The
  product is fbgemm's `quantized::linear_dynamic`, the fast int8 kernel of CPUs below AVX-512:
  on an AMD EPYC with AVX2 one step's products took 30.9 ms against int8's 60.4 (bench_kernels),
  and it takes float32 activations at full speed, where int8/int4's kernels are ~15x slower with
  float32 than with bfloat16 activations on that CPU (quantizing warns, `fast_float32_kernels`).
  fbgemm keeps its own packed copy of each weight (made at first use): about 1.3x the int8 bytes
  more in memory, not in checkpoints.

A `QuantizedWeight` takes the place of the dense weight in the module tree (`linear1.weight`,
`self_attn.in_proj_weight`), so the transformer's code is unchanged: `MatmulForms.linear` hands
products with it to `QuantizedWeight.linear`, slices of the fused in_proj (`w[:d]`) are row
slices (`QuantizedRows`). Products use torch's CPU kernels (`_weight_int8pack_mm`,
`_weight_int4pack_mm_for_cpu`, `_int_mm`) and fall back to the same arithmetic in float elsewhere.
Its state dict holds `qweight` (int8 [N, K], or int4 as uint8 [N, K / 2], two values per byte,
even column in the low nibble), `scales` ([N], or [N, K / group]) and, for int4, `zeros`.
"""
from __future__ import annotations

import itertools
import warnings
import weakref

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("int8", "int4", "w8a8", "int8-dynamic")
INT8_MODES = ("int8", "w8a8", "int8-dynamic")  # one int8 scale per output row: the same state dict
DEFAULT_GROUP_SIZE = 128  # the group measured in issue 12's table (int4, musicgen-small shape)
_INT8_KERNEL = hasattr(torch.ops.aten, "_weight_int8pack_mm")
_INT_MM = hasattr(torch, "_int_mm")
_INT4_KERNEL = hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and \
    hasattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu")
_FBGEMM = "fbgemm" in torch.backends.quantized.supported_engines and hasattr(torch.ops.quantized, "linear_dynamic")
DYNAMIC_QMAX = 127  # int8-dynamic's activations: [0, 127] (fbgemm's reduce_range)


def check_mode(mode: str, group_size: int, in_features: int | None = None) -> None:
    """Errors for a mode other than int8/int4, or a group size that does not divide the input width."""
    if mode not in MODES:
        raise ValueError(f"quantization mode {mode!r} is not supported; use one of {', '.join(MODES)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2 or group_size % 2:
        raise ValueError(f"group_size must be an even integer >= 2, got {group_size!r}")
    if mode == "int4" and in_features is not None and in_features % group_size:
        raise ValueError(f"int4 group_size {group_size} does not divide the layer's {in_features} inputs; "
                         "pick a group size that divides every layer's input width (e.g. 32)")


class QuantizedWeight(nn.Module):
    """A quantized [N, K] weight; `linear(x, bias)` is `F.linear(x, dequantized, bias)`.

    Build it with `QuantizedWeight.quantize(weight, mode, group_size)`; the constructor makes one
    of the right shapes holding zeros, for a state dict to be loaded into.
    """

    def __init__(self, shape: tuple[int, int], mode: str, group_size: int, dtype: torch.dtype,
                 device: torch.device | str | None = None):
        super().__init__()
        n, k = shape
        check_mode(mode, group_size, k)
        self.mode, self.group_size, self.shape = mode, group_size, torch.Size(shape)
        if mode in INT8_MODES:
            qweight = torch.zeros(n, k, dtype=torch.int8, device=device)
            if mode == "w8a8":  # column-major: qweight.t() is `_int_mm`'s contiguous [K, N]
                qweight = torch.zeros(k, n, dtype=torch.int8, device=device).t()
            self.register_buffer("qweight", qweight)
            self.register_buffer("scales", torch.ones(n, dtype=dtype, device=device))
        else:
            self.register_buffer("qweight", torch.zeros(n, k // 2, dtype=torch.uint8, device=device))
            self.register_buffer("scales", torch.ones(n, k // group_size, dtype=dtype, device=device))
            self.register_buffer("zeros", torch.zeros(n, k // group_size, dtype=dtype, device=device))
        self._packed: dict = {}  # int4 / fbgemm kernel layouts per row range (and dtype), made at first use

    @classmethod
    def quantize(cls, weight: torch.Tensor, mode: str, group_size: int = DEFAULT_GROUP_SIZE) -> "QuantizedWeight":
        """Quantize a dense [N, K] weight (the scales keep its dtype)."""
        out = cls(tuple(weight.shape), mode, group_size, weight.dtype, weight.device)
        with torch.no_grad():
            w = weight.detach().float()
            if mode in INT8_MODES:
                scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127
                out.qweight.copy_(torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8))
                out.scales.copy_(scales)
            else:
                groups = w.reshape(w.shape[0], -1, group_size)  # [N, K / g, g]
                low, high = groups.amin(dim=-1), groups.amax(dim=-1)
                scales = (high - low).clamp(min=1e-12) / 15
                q = torch.round((groups - low[..., None]) / scales[..., None]).clamp(0, 15).to(torch.uint8)
                out.qweight.copy_(_pack_nibbles(q.reshape(w.shape)))
                out.scales.copy_(scales)
                out.zeros.copy_(low + 8 * scales)
        return out

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (that of the scales): what the dense weight's dtype was."""
        return self.scales.dtype

    @property
    def device(self) -> torch.device:
        return self.qweight.device

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def dequantize(self, dtype: torch.dtype | None = None, rows: slice = slice(None)) -> torch.Tensor:
        """The dense weight (rows `rows`) in `dtype` (default: the compute dtype)."""
        scales = self.scales[rows].float()
        if self.mode in INT8_MODES:
            w = self.qweight[rows].float() * scales[:, None]
        else:
            q = _unpack_nibbles(self.qweight[rows]).float()
            n = q.shape[0]
            w = ((q.reshape(n, -1, self.group_size) - 8) * scales[..., None]
                 + self.zeros[rows].float()[..., None]).reshape(n, -1)
        return w.to(dtype or self.dtype)

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None, rows: slice = slice(None)) -> torch.Tensor:
        """`F.linear(x, self.dequantize()[rows], bias)` (w8a8, int8-dynamic: with `x` quantized too),
        with torch's CPU kernel when it has one."""
        if self.mode == "w8a8":
            return self._linear_w8a8(x, bias, rows)
        if self.mode == "int8-dynamic":
            return self._linear_dynamic(x, bias, rows)
        kernel_ok = x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16, torch.float16) \
            and not x.requires_grad
        if self.mode == "int4":  # torch's int4 kernel takes rows in multiples of 16 and these group sizes
            kernel_ok = kernel_ok and _INT4_KERNEL and len(range(self.shape[0])[rows]) % 16 == 0 \
                and self.group_size in (32, 64, 128, 256)
        if not kernel_ok or (self.mode == "int8" and not _INT8_KERNEL):
            return F.linear(x, self.dequantize(x.dtype, rows), bias)
        flat = x.reshape(-1, x.shape[-1]).contiguous()
        if self.mode == "int8":
            out = torch.ops.aten._weight_int8pack_mm(flat, self.qweight[rows].contiguous(),
                                                     self.scales[rows].to(x.dtype))
        else:
            packed, scales_zeros = self._int4_layout(rows, x.dtype)
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, packed, self.group_size, scales_zeros)
        if bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def _linear_w8a8(self, x: torch.Tensor, bias: torch.Tensor | None, rows: slice) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        qx, x_scales = quantize_rows(flat)  # [M, K] int8, [M, 1] float32
        qweight = self.qweight[rows]  # [n, K], column-major
        if x.device.type == "cpu" and _INT_MM and not x.requires_grad:
            acc = torch._int_mm(qx, qweight.t()).float()  # exact int32 sums
        else:  # the same sums in float64 (exact as well: |sum| <= K * 127^2 < 2^53)
            acc = (qx.double() @ qweight.t().double()).float()
        out = (acc * (x_scales * self.scales[rows].float())).to(x.dtype)
        if bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def _linear_dynamic(self, x: torch.Tensor, bias: torch.Tensor | None, rows: slice) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if x.device.type == "cpu" and _FBGEMM and not x.requires_grad:
            handle, flat = self._fbgemm_layout(rows), flat.float().contiguous()
            if torch.compiler.is_compiling():  # the opaque op; eager calls fbgemm directly (~85 us less a call)
                out = fbgemm_linear_dynamic(flat, handle, len(range(self.shape[0])[rows]))
            else:
                out = torch.ops.quantized.linear_dynamic(flat, _FBGEMM_PACKED[handle], True)
        else:  # the same arithmetic: exact integer sums in float64 (|sum| <= K * 127^2 < 2^53)
            qx, scale, zero = quantize_dynamic_input(flat)
            acc = (qx.double() - zero) @ self.qweight[rows].double().t()
            out = (acc * (scale * self.scales[rows].double())).float()
        if out.dtype != x.dtype:
            out = out.to(x.dtype)
        if bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def _fbgemm_layout(self, rows: slice) -> int:
        # fbgemm's packed weight (its own copy), per row range, made once (at the eager first steps
        # of a compiled generation), kept in `_FBGEMM_PACKED` under a handle that is never reused;
        # the engine is named so that the arithmetic does not follow torch.backends.quantized.engine.
        key = ("fbgemm", rows.start, rows.stop)
        if self._packed.get(key) not in _FBGEMM_PACKED:  # (a copy's handle dies with its original)
            q = self.qweight[rows].contiguous()
            scales = self.scales[rows].double()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's deprecation notice for quantized tensors
                weight = torch._make_per_channel_quantized_tensor(
                    q, scales, torch.zeros(len(scales), dtype=torch.long), 0)
                engine = torch.backends.quantized.engine
                try:
                    torch.backends.quantized.engine = "fbgemm"
                    packed = torch.ops.quantized.linear_prepack(weight, None)
                finally:
                    torch.backends.quantized.engine = engine
            handle = next(_HANDLES)
            _FBGEMM_PACKED[handle] = packed
            weakref.finalize(self, _FBGEMM_PACKED.pop, handle, None)  # freed with this weight
            self._packed[key] = handle
        return self._packed[key]

    def _int4_layout(self, rows: slice, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # The kernel's packing interleaves rows, so a row range cannot be cut from the packed
        # whole: each range used (in_proj's q, k, v) gets its own, made once.
        key = (rows.start, rows.stop, dtype)
        if key not in self._packed:
            q = _unpack_nibbles(self.qweight[rows]).to(torch.int32).contiguous()
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
            scales_zeros = torch.stack([self.scales[rows], self.zeros[rows]], dim=-1)  # [n, K / g, 2]
            self._packed[key] = packed, scales_zeros.transpose(0, 1).to(dtype).contiguous()  # [K / g, n, 2]
        return self._packed[key]

    def __getitem__(self, rows: slice) -> "QuantizedRows":
        """Rows `rows` of the weight (e.g. the q part of a fused in_proj: `w[:d]`)."""
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError(f"a QuantizedWeight is sliced by contiguous rows (w[a:b]), got {rows!r}")
        start, stop, _ = rows.indices(self.shape[0])
        return QuantizedRows(self, slice(start, stop))

    def _apply(self, fn, *args, **kwargs):
        self._drop_layouts()  # moved or cast: the kernel layouts are made again
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._drop_layouts()
        return super()._load_from_state_dict(*args, **kwargs)

    def _drop_layouts(self) -> None:
        for key, value in self._packed.items():
            if key[0] == "fbgemm":
                _FBGEMM_PACKED.pop(value, None)
        self._packed = {}

    def extra_repr(self) -> str:
        group = f", group {self.group_size}" if self.mode == "int4" else ""
        return f"{self.mode}{group}, {self.shape[0]} x {self.shape[1]}"


_FBGEMM_PACKED: dict[int, object] = {}  # handle -> fbgemm's packed weight (a torch.ScriptObject)
_HANDLES = itertools.count()


@torch.library.custom_op("audiocraft_patched::fbgemm_linear_dynamic", mutates_args=())
def fbgemm_linear_dynamic(x: torch.Tensor, handle: int, out_features: int) -> torch.Tensor:
    """fbgemm's dynamic int8 product of float32 `x` [M, K] by the packed weight `handle` (7-bit
    activations). An opaque op, so that a compiled step traces it as one call: the packed weight
    is a ScriptObject, which torch.compile would otherwise break its graph at."""
    return torch.ops.quantized.linear_dynamic(x, _FBGEMM_PACKED[handle], True)


@fbgemm_linear_dynamic.register_fake
def _(x: torch.Tensor, handle: int, out_features: int) -> torch.Tensor:
    return x.new_empty(x.shape[0], out_features)


class QuantizedRows:
    """A contiguous row range of a `QuantizedWeight`: what `w[a:b]` of a fused weight gives."""

    def __init__(self, whole: QuantizedWeight, rows: slice):
        self.whole, self.rows = whole, rows
        self.shape = torch.Size((rows.stop - rows.start, whole.shape[1]))

    @property
    def dtype(self) -> torch.dtype:
        return self.whole.dtype

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return self.whole.linear(x, bias, self.rows)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.whole.dequantize(dtype, self.rows)


QUANTIZED = (QuantizedWeight, QuantizedRows)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w8a8's activation rounding: [M, K] -> int8 values and [M, 1] float32 scales, one per row
    (`x ~= q * scale`, q in [-127, 127], scale = absmax / 127)."""
    scales = x.float().abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / 127
    q = torch.round(x.float() / scales).clamp(-127, 127).to(torch.int8)
    return q, scales


def quantize_dynamic_input(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """int8-dynamic's activation rounding (torch.ao's dynamic int8, 7 bits): [M, K] -> values in
    [0, 127], and the float64 scale and zero point of the whole input (`x ~= (q - zero) * scale`).

    The range is [min(x, 0), max(x, 0)] (zero exactly representable), scale = range / 127 held in
    float32, zero = round(-min / scale); the values are round(x / scale) + zero, clamped.
    """
    low, high = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = (high - low) / DYNAMIC_QMAX
    if float(torch.tensor(scale, dtype=torch.float32)) == 0.0:
        scale = 0.1  # an all-zero input: any scale rounds it to the zero point
    scale = torch.tensor(scale, dtype=torch.float32).double()
    zero = torch.round(-low / scale).clamp(0, DYNAMIC_QMAX)
    q = (torch.round(x.double() / scale) + zero).clamp(0, DYNAMIC_QMAX)
    return q, scale, zero


def _pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """[N, K] values in [0, 15] -> [N, K / 2] uint8, even columns in the low nibble."""
    return (q[:, 0::2] | (q[:, 1::2] << 4)).to(torch.uint8)


def _unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `_pack_nibbles`: [N, K / 2] uint8 -> [N, K] uint8."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


def _targets(transformer: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, attribute) of every weight a transformer multiplies activations by: the attention
    in_proj weights and the weights of its `nn.Linear`s (attention out_proj, feed-forward)."""
    found = []
    for module in transformer.modules():
        for name in ("in_proj_weight", "weight"):
            if name == "weight" and not isinstance(module, nn.Linear):
                continue
            value = getattr(module, name, None)
            if isinstance(value, (nn.Parameter, QuantizedWeight)):
                found.append((module, name))
    return found


def quantize_transformer(transformer: nn.Module, mode: str, group_size: int = DEFAULT_GROUP_SIZE,
                         empty: bool = False) -> int:
    """Replace the transformer's linear weights by `QuantizedWeight`s, in place.

    Args:
        transformer: the LM's `StreamingTransformer` (its products go through `MatmulForms.linear`).
        mode: one of MODES ('int8', 'int4', 'w8a8', 'int8-dynamic').
        group_size: int4 inputs per (scale, zero); must divide every layer's input width.
        empty: make holders of the right shapes without quantizing (a state dict is loaded next).
    Returns:
        the number of weights replaced.
    """
    targets = _targets(transformer)
    if any(isinstance(getattr(module, name), QuantizedWeight) for module, name in targets):
        raise ValueError("this model is already quantized; load it again to quantize it another way")
    for module, name in targets:
        check_mode(mode, group_size, getattr(module, name).shape[1])  # all checked before any is changed
    first = getattr(*targets[0])
    if mode == "w8a8" and not empty and not fast_int_mm(first.device):
        warnings.warn(f"w8a8: this CPU ({torch.backends.cpu.get_cpu_capability()}, no AVX-512) has no fast "
                      "int8 x int8 kernel: its products are ~10x slower than int8's; use quantize('int8-dynamic') "
                      "(or 'int8' after set_dtype('bf16'))",
                      stacklevel=3)
    slow_float32 = first.dtype == torch.float32 and not fast_float32_kernels(first.device)
    if mode in ("int8", "int4") and not empty and slow_float32:
        warnings.warn(f"{mode} with float32 activations: on this CPU ({torch.backends.cpu.get_cpu_capability()}, "
                      "no AVX-512) torch's weight-only kernels are ~15x slower in float32 than in bfloat16; "
                      "call set_dtype('bf16') before quantizing (CLI: --dtype bf16), or use 'int8-dynamic'",
                      stacklevel=3)
    for module, name in targets:
        weight = getattr(module, name)
        holder = (QuantizedWeight(tuple(weight.shape), mode, group_size, weight.dtype, weight.device) if empty
                  else QuantizedWeight.quantize(weight, mode, group_size))
        delattr(module, name)  # the Parameter leaves; the holder (a submodule) takes its name
        setattr(module, name, holder)
    return len(targets)


def fast_int_mm(device: torch.device) -> bool:
    """Whether w8a8's int8 x int8 kernel is fast here: not on a CPU below AVX-512 (no VNNI).

    Measured on an AMD EPYC with AVX2 only (bench/README.md): `torch._int_mm` of 2 rows by a
    1024 x 4096 weight took 9.4 ms, `_weight_int8pack_mm` (int8) 0.69 ms.
    """
    return device.type != "cpu" or torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def fast_float32_kernels(device: torch.device) -> bool:
    """Whether int8/int4's kernels are fast with float32 activations here: not on a CPU below AVX-512.

    Measured on an AMD EPYC with AVX2 only (1 thread, 2 rows by a 4096 x 1024 weight):
    `_weight_int8pack_mm` 11.2 ms in float32, 0.89 in bfloat16; the int4 kernel 19.1 and 0.69.
    """
    return fast_int_mm(device)


def quantization_of(transformer: nn.Module) -> dict | None:
    """`{'mode', 'group_size'}` of a quantized transformer (what checkpoints record), else None."""
    for module in transformer.modules():
        if isinstance(module, QuantizedWeight):
            return {"mode": module.mode, "group_size": module.group_size}
    return None


def quantize_linears(module: nn.Module, mode: str, group_size: int = DEFAULT_GROUP_SIZE) -> int:
    """Replace every `nn.Linear` under `module` (e.g. a text encoder) by a `QuantizedLinear`; returns the count."""
    linears = [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
               if isinstance(child, nn.Linear) and child.in_features % (group_size if mode == "int4" else 1) == 0]
    for parent, name, child in linears:
        setattr(parent, name, QuantizedLinear(child, mode, group_size))
    return len(linears)


class QuantizedLinear(nn.Module):
    """An `nn.Linear` whose weight is a `QuantizedWeight` (for modules that call their Linears directly)."""

    def __init__(self, linear: nn.Linear, mode: str, group_size: int = DEFAULT_GROUP_SIZE):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = QuantizedWeight.quantize(linear.weight, mode, group_size)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.linear(x, self.bias)


def quantize_as_recorded(transformer: nn.Module, recorded: object) -> int:
    """Give `transformer` the empty holders a checkpoint's `quantize: {mode, group_size}` entry
    describes (its weights are loaded next); errors name what is wrong with the entry."""
    if not isinstance(recorded, dict) or set(recorded) != {"mode", "group_size"}:
        raise ValueError(f"quantize must be {{mode: {' | '.join(MODES)}, group_size: N}}, got {recorded!r}")
    return quantize_transformer(transformer, recorded["mode"], recorded["group_size"], empty=True)
