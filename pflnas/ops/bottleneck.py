"""``bottleneck`` forms of the ops: the spatial operation of a ResNet bottleneck.

The bottleneck is ``1x1 conv-BN-ReLU -> spatial op -> 1x1 conv-BN (+ shortcut) -> ReLU`` (ResNet v1.5:
the stride sits in the spatial op). Trainable ops are post-activation Conv-BN-ReLU as in torchvision's
``Bottleneck``; pools and the identity are bare, with no BN or ReLU after them, as in the R50-max and
R50-hybrid bottlenecks of Han et al. (ICLR 2022). Every op keeps the width.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from pflnas.ops.registry import OpArgs


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) -> BN -> ReLU, named ``conv``, ``bn``, ``act``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
                bn=nn.BatchNorm2d(c_out),
                act=nn.ReLU(inplace=True),
            )
        )


def _width(name: str, a: OpArgs) -> int:
    if a.c_in != a.c_out:
        raise ValueError(f"op {name!r} keeps the bottleneck width; got c_in={a.c_in}, c_out={a.c_out}")
    return a.c_in


def conv_3x3(a: OpArgs) -> nn.Module:
    return ConvBNReLU(_width("conv_3x3", a), a.c_out, 3, a.stride)


def dw_conv_3x3(a: OpArgs) -> nn.Module:
    c = _width("dw_conv_3x3", a)
    return ConvBNReLU(c, c, 3, a.stride, groups=c)


def max_pool_3x3(a: OpArgs) -> nn.Module:
    _width("max_pool_3x3", a)
    return nn.MaxPool2d(3, stride=a.stride, padding=1)


def avg_pool_3x3(a: OpArgs) -> nn.Module:
    _width("avg_pool_3x3", a)
    return nn.AvgPool2d(3, stride=a.stride, padding=1, count_include_pad=False)


def identity(a: OpArgs) -> nn.Module:
    _width("identity", a)
    return nn.Identity()


def avg_pool_2x2_conv_3x3(a: OpArgs) -> nn.Module:
    c = _width("avg_pool_2x2_conv_3x3", a)
    return nn.Sequential(OrderedDict(pool=nn.AvgPool2d(2, stride=2), conv=ConvBNReLU(c, c, 3)))
