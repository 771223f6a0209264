"""SEANet encoder and decoder: the convolutional autoencoder of EnCodec.

Mirrors `audiocraft/modules/seanet.py` (audiocraft 1.3.0; its LSTM is `lstm.py`, as upstream's):
same constructor arguments and the same `nn.Sequential` layout, so that state dict keys
(`model.<i>.conv.conv.weight_g`, `model.<i>.lstm.weight_ih_l0`, ...) are upstream's.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .conv import StreamableConv1d, StreamableConvTranspose1d
from .errors import ValueAssertionError
from .lstm import StreamableLSTM


def _activation(name: str, params: dict[str, Any] | None) -> nn.Module:
    """`torch.nn.<name>(**params)`, e.g. ('ELU', {'alpha': 1.0})."""
    if not hasattr(nn, name):
        raise ValueError(f"unknown activation {name!r}: expected a class name in torch.nn")
    return getattr(nn, name)(**(params or {}))


def _check_outer_blocks(disable_norm_outer_blocks: int, n_blocks: int) -> None:
    if not 0 <= disable_norm_outer_blocks <= n_blocks:
        raise ValueAssertionError(f"disable_norm_outer_blocks must be in [0, {n_blocks}] "
                         f"(number of blocks), got {disable_norm_outer_blocks}")


class SEANetResnetBlock(nn.Module):
    """Residual block: `shortcut(x) + (act -> conv) * len(kernel_sizes)`.

    Args:
        dim: input and output channels.
        kernel_sizes: kernel size of each conv of the residual branch.
        dilations: dilation of each conv, same length as `kernel_sizes`.
        activation: `torch.nn` class name, e.g. 'ELU'.
        activation_params: its keyword arguments.
        norm: conv normalization ('none', 'weight_norm', 'time_group_norm').
        norm_params: keyword arguments of the normalization.
        causal: causal convolutions.
        pad_mode: padding mode of the convolutions.
        compress: the branch's inner width is `dim // compress`.
        true_skip: identity shortcut; else a 1x1 conv.
    """

    def __init__(self, dim: int, kernel_sizes: list[int] | None = None,
                 dilations: list[int] | None = None, activation: str = "ELU",
                 activation_params: dict[str, Any] | None = None, norm: str = "none",
                 norm_params: dict[str, Any] | None = None, causal: bool = False,
                 pad_mode: str = "reflect", compress: int = 2, true_skip: bool = True):
        super().__init__()
        kernel_sizes = [3, 1] if kernel_sizes is None else kernel_sizes
        dilations = [1, 1] if dilations is None else dilations
        activation_params = {"alpha": 1.0} if activation_params is None else activation_params
        if len(kernel_sizes) != len(dilations):
            raise ValueAssertionError(f"{len(kernel_sizes)} kernel sizes but {len(dilations)} dilations")
        hidden = dim // compress
        conv_kw = dict(norm=norm, norm_kwargs=norm_params, causal=causal, pad_mode=pad_mode)
        layers: list[nn.Module] = []
        last = len(kernel_sizes) - 1
        for i, (kernel_size, dilation) in enumerate(zip(kernel_sizes, dilations)):
            layers += [
                _activation(activation, activation_params),
                StreamableConv1d(dim if i == 0 else hidden, dim if i == last else hidden,
                                 kernel_size=kernel_size, dilation=dilation, **conv_kw),
            ]
        self.block = nn.Sequential(*layers)
        self.shortcut = nn.Identity() if true_skip else StreamableConv1d(dim, dim, 1, **conv_kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class SEANetEncoder(nn.Module):
    """Waveform [B, channels, T] -> latent [B, dimension, ceil(T / hop_length)].

    Layout of `model`: conv(kernel_size); per ratio: `n_residual_layers` resnet blocks, act,
    strided conv doubling the width; optional LSTM; act, conv(last_kernel_size) to `dimension`.

    Args:
        channels: audio channels.
        dimension: latent channels.
        n_filters: width of the first conv; doubles at each downsampling.
        n_residual_layers: resnet blocks per stage; block j has dilation `dilation_base ** j`.
        ratios: up-sampling ratios in decoder order; the encoder downsamples in reverse order.
            Each stage's conv has kernel `2 * ratio` and stride `ratio`.
        activation, activation_params: see `SEANetResnetBlock`.
        norm, norm_params: conv normalization and its arguments.
        kernel_size: first conv's kernel.
        last_kernel_size: last conv's kernel.
        residual_kernel_size: first kernel of each resnet block (the second is 1).
        dilation_base: dilation growth within a stage.
        causal: causal convolutions.
        pad_mode: padding mode of the convolutions.
        true_skip: identity shortcuts in resnet blocks.
        compress: resnet branch width divisor.
        lstm: number of LSTM layers before the last conv (0: none).
        disable_norm_outer_blocks: no norm on the first N of the `len(ratios) + 2` blocks
            (first conv, stages, last conv).
    """

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32,
                 n_residual_layers: int = 3, ratios: list[int] | None = None,
                 activation: str = "ELU", activation_params: dict[str, Any] | None = None,
                 norm: str = "none", norm_params: dict[str, Any] | None = None,
                 kernel_size: int = 7, last_kernel_size: int = 7, residual_kernel_size: int = 3,
                 dilation_base: int = 2, causal: bool = False, pad_mode: str = "reflect",
                 true_skip: bool = True, compress: int = 2, lstm: int = 0,
                 disable_norm_outer_blocks: int = 0):
        super().__init__()
        ratios = [8, 5, 4, 2] if ratios is None else ratios
        activation_params = {"alpha": 1.0} if activation_params is None else activation_params
        self.channels = channels
        self.dimension = dimension
        self.n_filters = n_filters
        self.n_residual_layers = n_residual_layers
        self.ratios = list(reversed(ratios))
        self.hop_length = math.prod(self.ratios)
        self.n_blocks = n_blocks = len(self.ratios) + 2
        _check_outer_blocks(disable_norm_outer_blocks, n_blocks)
        self.disable_norm_outer_blocks = disable_norm_outer_blocks

        def block_norm(block: int) -> str:
            # Blocks are numbered from 1 at the input.
            return "none" if block <= disable_norm_outer_blocks else norm

        conv_kw = dict(norm_kwargs=norm_params, causal=causal, pad_mode=pad_mode)
        res_kw = dict(activation=activation, activation_params=activation_params, norm_params=norm_params,
                      causal=causal, pad_mode=pad_mode, compress=compress, true_skip=true_skip)
        width = n_filters
        layers: list[nn.Module] = [StreamableConv1d(channels, width, kernel_size, norm=block_norm(1), **conv_kw)]
        for i, ratio in enumerate(self.ratios):
            stage_norm = block_norm(i + 2)
            layers += [SEANetResnetBlock(width, kernel_sizes=[residual_kernel_size, 1],
                                         dilations=[dilation_base ** j, 1], norm=stage_norm, **res_kw)
                       for j in range(n_residual_layers)]
            layers += [_activation(activation, activation_params),
                       StreamableConv1d(width, width * 2, kernel_size=ratio * 2, stride=ratio, norm=stage_norm,
                                        **conv_kw)]
            width *= 2
        if lstm:
            layers.append(StreamableLSTM(width, num_layers=lstm))
        layers += [_activation(activation, activation_params),
                   StreamableConv1d(width, dimension, last_kernel_size, norm=block_norm(n_blocks), **conv_kw)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class SEANetDecoder(nn.Module):
    """Latent [B, dimension, T] -> waveform [B, channels, T * hop_length].

    Layout of `model`: conv(kernel_size); optional LSTM; per ratio: act, transposed conv halving
    the width, `n_residual_layers` resnet blocks; act, conv(last_kernel_size) to `channels`;
    optional final activation.

    Args:
        As `SEANetEncoder`, except:
        ratios: up-sampling ratios, applied in this order.
        disable_norm_outer_blocks: no norm on the last N of the `len(ratios) + 2` blocks.
        final_activation: `torch.nn` class name of an activation after the last conv, or None.
        final_activation_params: its keyword arguments.
        trim_right_ratio: see `StreamableConvTranspose1d` (causal only).
    """

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32,
                 n_residual_layers: int = 3, ratios: list[int] | None = None,
                 activation: str = "ELU", activation_params: dict[str, Any] | None = None,
                 final_activation: str | None = None,
                 final_activation_params: dict[str, Any] | None = None,
                 norm: str = "none", norm_params: dict[str, Any] | None = None,
                 kernel_size: int = 7, last_kernel_size: int = 7, residual_kernel_size: int = 3,
                 dilation_base: int = 2, causal: bool = False, pad_mode: str = "reflect",
                 true_skip: bool = True, compress: int = 2, lstm: int = 0,
                 disable_norm_outer_blocks: int = 0, trim_right_ratio: float = 1.0):
        super().__init__()
        ratios = [8, 5, 4, 2] if ratios is None else ratios
        activation_params = {"alpha": 1.0} if activation_params is None else activation_params
        self.channels = channels
        self.dimension = dimension
        self.n_filters = n_filters
        self.n_residual_layers = n_residual_layers
        self.ratios = list(ratios)
        self.hop_length = math.prod(self.ratios)
        self.n_blocks = n_blocks = len(self.ratios) + 2
        _check_outer_blocks(disable_norm_outer_blocks, n_blocks)
        self.disable_norm_outer_blocks = disable_norm_outer_blocks

        def block_norm(block: int) -> str:
            # Blocks are numbered from 1 at the output.
            return "none" if block <= disable_norm_outer_blocks else norm

        conv_kw = dict(norm_kwargs=norm_params, causal=causal)  # the transposed conv has no pad_mode
        res_kw = dict(activation=activation, activation_params=activation_params, norm_params=norm_params,
                      causal=causal, pad_mode=pad_mode, compress=compress, true_skip=true_skip)
        width = n_filters * 2 ** len(self.ratios)
        layers: list[nn.Module] = [StreamableConv1d(dimension, width, kernel_size, norm=block_norm(n_blocks),
                                                    pad_mode=pad_mode, **conv_kw)]
        if lstm:
            layers.append(StreamableLSTM(width, num_layers=lstm))
        for i, ratio in enumerate(self.ratios):
            stage_norm = block_norm(n_blocks - i - 1)
            layers += [_activation(activation, activation_params),
                       StreamableConvTranspose1d(width, width // 2, kernel_size=ratio * 2, stride=ratio,
                                                 norm=stage_norm, trim_right_ratio=trim_right_ratio, **conv_kw)]
            width //= 2
            layers += [SEANetResnetBlock(width, kernel_sizes=[residual_kernel_size, 1],
                                         dilations=[dilation_base ** j, 1], norm=stage_norm, **res_kw)
                       for j in range(n_residual_layers)]
        layers += [_activation(activation, activation_params),
                   StreamableConv1d(n_filters, channels, last_kernel_size, norm=block_norm(1),
                                    pad_mode=pad_mode, **conv_kw)]
        if final_activation is not None:
            layers.append(_activation(final_activation, final_activation_params))
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)
