"""The ``cell`` forms of the built-in ops (declared in :mod:`pflnas.ops.catalog`), named as DARTS and
NAS-Bench-201 name them.

The modules follow DARTS' ``cnn/operations.py`` layer for layer so that derived networks match the
published parameter counts exactly; the factorized reduction pads odd inputs as NAS-Bench-201 does
(identical to DARTS on even sizes).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pflnas.ops.registry import OpArgs


def _same_channels(name: str, c_in: int, c_out: int) -> None:
    if c_in != c_out:
        raise ValueError(f"op {name!r} keeps the channel count; got c_in={c_in}, c_out={c_out}")


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise dilated conv -> pointwise conv -> BN (DARTS ``DilConv``)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
    ):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convs (DARTS ``SepConv``); only the first is strided."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape."""

    def __init__(self, c_out: int, stride: int):
        super().__init__()
        self.c_out = c_out
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        if x.shape[1] != self.c_out:
            shape = (x.shape[0], self.c_out, x.shape[2], x.shape[3])
            return x.new_zeros(shape)
        return x.mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset strided 1x1 convs, concatenated, then BN."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even c_out, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        # Pad one row/column at the end so odd sizes work; identical to DARTS on even sizes.
        shifted = nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def none(a: OpArgs) -> nn.Module:
    return Zero(a.c_out, a.stride)


def skip_connect(a: OpArgs) -> nn.Module:
    if a.stride == 1:
        _same_channels("skip_connect", a.c_in, a.c_out)
        return nn.Identity()
    return FactorizedReduce(a.c_in, a.c_out, a.affine)


def max_pool_3x3(a: OpArgs) -> nn.Module:
    _same_channels("max_pool_3x3", a.c_in, a.c_out)
    return nn.MaxPool2d(3, stride=a.stride, padding=1)


def avg_pool_3x3(a: OpArgs) -> nn.Module:
    _same_channels("avg_pool_3x3", a.c_in, a.c_out)
    return nn.AvgPool2d(3, stride=a.stride, padding=1, count_include_pad=False)


def conv_3x3(a: OpArgs) -> nn.Module:
    return ReLUConvBN(a.c_in, a.c_out, 3, a.stride, 1, a.affine)


def conv_1x1(a: OpArgs) -> nn.Module:
    return ReLUConvBN(a.c_in, a.c_out, 1, a.stride, 0, a.affine)


def sep_conv_3x3(a: OpArgs) -> nn.Module:
    return SepConv(a.c_in, a.c_out, 3, a.stride, 1, a.affine)


def sep_conv_5x5(a: OpArgs) -> nn.Module:
    return SepConv(a.c_in, a.c_out, 5, a.stride, 2, a.affine)


def dil_conv_3x3(a: OpArgs) -> nn.Module:
    return DilConv(a.c_in, a.c_out, 3, a.stride, 2, 2, a.affine)


def dil_conv_5x5(a: OpArgs) -> nn.Module:
    return DilConv(a.c_in, a.c_out, 5, a.stride, 4, 2, a.affine)
