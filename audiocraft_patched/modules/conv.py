"""1D convolutions that pad themselves, with weight norm kept in upstream's state_dict layout.

Mirrors `audiocraft/modules/conv.py` (audiocraft 1.3.0), 1D only (SEANet uses no 2D convs).

Upstream applies the deprecated `torch.nn.utils.weight_norm`, so its checkpoints hold
`<conv>.weight_g` (magnitude, [C, 1, 1]) and `<conv>.weight_v` (direction, the weight's shape)
rather than the `parametrizations.weight.original0/1` of the newer API. We keep the
`weight_g`/`weight_v` names, so our state dicts load in upstream, and also accept the
parametrization names on load. The weight is computed with `torch._weight_norm`, the kernel both
torch APIs call, so it equals upstream's bit for bit.
Argument errors that upstream asserts raise `ValueAssertionError` (a ValueError and an AssertionError).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ValueAssertionError

CONV_NORMALIZATIONS = frozenset(["none", "weight_norm", "time_group_norm"])


def get_extra_padding_for_conv1d(x: torch.Tensor, kernel_size: int, stride: int,
                                 padding_total: int = 0) -> int:
    """Right padding that makes the last window of a strided conv full.

    Without it the transposed conv of the decoder could not rebuild the full length: e.g.
    kernel 4, stride 2, padding 4 on 5 samples leaves the last sample in no output frame.

    Args:
        x: [..., T] input.
    """
    length = x.shape[-1]
    n_frames = -(-(length - kernel_size + padding_total) // stride) + 1  # ceil division
    ideal_length = (n_frames - 1) * stride + (kernel_size - padding_total)
    return ideal_length - length


def pad_for_conv1d(x: torch.Tensor, kernel_size: int, stride: int, padding_total: int = 0) -> torch.Tensor:
    """`x` [..., T] with zeros appended so that a strided conv's last window is full."""
    return F.pad(x, (0, get_extra_padding_for_conv1d(x, kernel_size, stride, padding_total)))


def pad1d(x: torch.Tensor, paddings: tuple[int, int], mode: str = "constant",
          value: float = 0.0) -> torch.Tensor:
    """`F.pad` on the last dim that also allows reflect padding wider than the input.

    Reflect padding needs more samples than the pad width; on shorter inputs we first append
    zeros, reflect, then drop those zeros again from the end.

    Args:
        x: [..., T] input.
        paddings: (left, right), both >= 0.
    """
    left, right = paddings
    if left < 0 or right < 0:
        raise ValueAssertionError(f"paddings must be >= 0, got {paddings}")
    if mode != "reflect":
        return F.pad(x, paddings, mode, value)
    length = x.shape[-1]
    extra = max(0, max(left, right) - length + 1)
    if extra:
        x = F.pad(x, (0, extra))
    padded = F.pad(x, paddings, mode, value)
    return padded[..., :padded.shape[-1] - extra]


def unpad1d(x: torch.Tensor, paddings: tuple[int, int]) -> torch.Tensor:
    """Remove (left, right) samples from the last dim of `x` [..., T]."""
    left, right = paddings
    if left < 0 or right < 0 or left + right > x.shape[-1]:
        raise ValueAssertionError(f"cannot remove paddings {paddings} from {x.shape[-1]} samples")
    return x[..., left:x.shape[-1] - right]


class _WeightNorm:
    """Mixin for a conv: `weight = weight_g * weight_v / ||weight_v||`, norm over all dims but 0.

    Dim 0 is the output channels of a conv, the input channels of a transposed conv (as in
    upstream, which uses torch's default `dim=0` for both).
    """

    def _split_weight(self) -> None:
        weight = self._parameters.pop("weight").detach()
        # Registration order gives upstream's key order: bias, weight_g, weight_v.
        self.weight_g = nn.Parameter(torch.norm_except_dim(weight, 2, 0))
        self.weight_v = nn.Parameter(weight)

    def normalized_weight(self) -> torch.Tensor:
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written with torch.nn.utils.parametrizations.weight_norm.
        for new, old in (("parametrizations.weight.original0", "weight_g"),
                         ("parametrizations.weight.original1", "weight_v")):
            if prefix + new in state_dict:
                state_dict[prefix + old] = state_dict.pop(prefix + new)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class WeightNormConv1d(_WeightNorm, nn.Conv1d):
    """`nn.Conv1d` with weight norm; parameters `weight_g`, `weight_v`, `bias`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._split_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.normalized_weight(), self.bias)


class WeightNormConvTranspose1d(_WeightNorm, nn.ConvTranspose1d):
    """`nn.ConvTranspose1d` with weight norm; parameters `weight_g`, `weight_v`, `bias`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._split_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.normalized_weight(), self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


def _check_norm(norm: str, causal: bool) -> None:
    if norm == "spectral_norm":
        raise NotImplementedError("spectral_norm is not ported: no released compression model uses it")
    if norm not in CONV_NORMALIZATIONS:
        raise ValueAssertionError(f"unknown conv norm {norm!r}; known: {sorted(CONV_NORMALIZATIONS)}")
    if norm == "time_group_norm" and causal:
        raise ValueError("time_group_norm normalizes over time, so it cannot be causal")


def _norm_module(norm: str, channels: int, norm_kwargs: dict[str, Any] | None) -> nn.Module:
    """GroupNorm with one group for 'time_group_norm' (over channels and time), else nothing."""
    if norm == "time_group_norm":
        return nn.GroupNorm(1, channels, **(norm_kwargs or {}))
    return nn.Identity()


class NormConv1d(nn.Module):
    """Conv1d followed by its normalization (`conv`, `norm` children as in upstream).

    Args:
        *args, **kwargs: `nn.Conv1d` arguments.
        causal: whether the model is causal (rejects `time_group_norm`).
        norm: 'none', 'weight_norm' or 'time_group_norm'.
        norm_kwargs: extra `nn.GroupNorm` arguments for 'time_group_norm'.
    """

    def __init__(self, *args, causal: bool = False, norm: str = "none",
                 norm_kwargs: dict[str, Any] | None = None, **kwargs):
        super().__init__()
        _check_norm(norm, causal)
        conv_cls = WeightNormConv1d if norm == "weight_norm" else nn.Conv1d
        self.conv = conv_cls(*args, **kwargs)
        self.norm = _norm_module(norm, self.conv.out_channels, norm_kwargs)
        self.norm_type = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class NormConvTranspose1d(nn.Module):
    """ConvTranspose1d followed by its normalization (`convtr`, `norm` children as in upstream).

    Args: as `NormConv1d`, with `nn.ConvTranspose1d` arguments.
    """

    def __init__(self, *args, causal: bool = False, norm: str = "none",
                 norm_kwargs: dict[str, Any] | None = None, **kwargs):
        super().__init__()
        _check_norm(norm, causal)
        conv_cls = WeightNormConvTranspose1d if norm == "weight_norm" else nn.ConvTranspose1d
        self.convtr = conv_cls(*args, **kwargs)
        self.norm = _norm_module(norm, self.convtr.out_channels, norm_kwargs)
        self.norm_type = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.convtr(x))


class StreamableConv1d(nn.Module):
    """Conv1d that pads its input so that the output has ceil(T / stride) frames.

    The `kernel - stride` samples of padding go all to the left when causal, else split with
    the extra sample on the left; the right also gets the padding that fills the last window.

    Args:
        in_channels, out_channels, kernel_size, stride, dilation, groups, bias: as `nn.Conv1d`.
        causal: pad on the left only.
        norm, norm_kwargs: see `NormConv1d`.
        pad_mode: `F.pad` mode ('constant', 'reflect', 'replicate', ...).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True, causal: bool = False,
                 norm: str = "none", norm_kwargs: dict[str, Any] | None = None,
                 pad_mode: str = "reflect"):
        super().__init__()
        if stride > 1 and dilation > 1:  # as upstream: legal, but most likely a configuration mistake
            warnings.warn(f"StreamableConv1d with stride > 1 and dilation > 1 (kernel_size={kernel_size}, "
                          f"stride={stride}, dilation={dilation})")
        self.conv = NormConv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation,
                               groups=groups, bias=bias, causal=causal, norm=norm,
                               norm_kwargs=norm_kwargs)
        self.causal = causal
        self.pad_mode = pad_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, T] -> [B, C_out, ceil(T / stride)]."""
        conv = self.conv.conv
        stride = conv.stride[0]
        kernel_size = (conv.kernel_size[0] - 1) * conv.dilation[0] + 1  # dilated extent
        padding_total = kernel_size - stride
        extra = get_extra_padding_for_conv1d(x, kernel_size, stride, padding_total)
        if self.causal:
            paddings = (padding_total, extra)
        else:
            right = padding_total // 2
            paddings = (padding_total - right, right + extra)
        return self.conv(pad1d(x, paddings, mode=self.pad_mode))


class StreamableConvTranspose1d(nn.Module):
    """ConvTranspose1d that trims its output to T * stride samples.

    The `kernel - stride` surplus samples are trimmed as `StreamableConv1d` pads: split with the
    extra one on the left, or, when causal, `ceil(trim_right_ratio * surplus)` on the right and
    the rest on the left. The encoder's extra right padding is not undone here; the caller cuts
    the final output to the length it wants.

    Args:
        in_channels, out_channels, kernel_size, stride: as `nn.ConvTranspose1d`.
        causal: trim according to `trim_right_ratio`.
        norm, norm_kwargs: see `NormConv1d`.
        trim_right_ratio: share of the surplus trimmed on the right; must be 1 unless causal.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 causal: bool = False, norm: str = "none", trim_right_ratio: float = 1.0,
                 norm_kwargs: dict[str, Any] | None = None):
        super().__init__()
        if not 0.0 <= trim_right_ratio <= 1.0:
            raise ValueAssertionError(f"trim_right_ratio must be in [0, 1], got {trim_right_ratio}")
        if not causal and trim_right_ratio != 1.0:
            raise ValueAssertionError("trim_right_ratio != 1 only makes sense for causal convolutions")
        self.convtr = NormConvTranspose1d(in_channels, out_channels, kernel_size, stride,
                                          causal=causal, norm=norm, norm_kwargs=norm_kwargs)
        self.causal = causal
        self.trim_right_ratio = trim_right_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, T] -> [B, C_out, T * stride]."""
        convtr = self.convtr.convtr
        padding_total = convtr.kernel_size[0] - convtr.stride[0]
        y = self.convtr(x)
        if self.causal:
            right = math.ceil(padding_total * self.trim_right_ratio)
        else:
            right = padding_total // 2
        return unpad1d(y, (padding_total - right, right))
