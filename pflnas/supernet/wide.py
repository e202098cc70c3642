"""Wide ops: one trainable op kind on all the edges leaving one or more stacked source nodes, as one op.

Every DARTS cell candidate starts with a ReLU, so for ``m`` edges leaving a source the ReLU runs once and each
op kind runs once with ``m`` times the output channels: a conv from C to m·C channels; a separable or dilated
conv as a depthwise conv with channel multiplier m followed by a pointwise conv with ``groups=m``. ``g``
sources of the same shape stacked on the channel axis (a cell's two inputs) run through the same op with
``groups=g`` over their ``g·m`` edges. Each edge keeps its own weights (a slice of the wide ones), so a wide
op computes exactly what its edges compute; :mod:`pflnas.supernet.layouts` converts the parameters.

A wide op stops before its candidates' final BatchNorm (``final_bn`` names it in the per-edge module): every
such BatchNorm is affine-free and per channel, so the fan (:class:`~pflnas.supernet.batched.SourceFan`)
normalises all its candidates' outputs as one. Wide tensors are source-major, then edge-major.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pflnas.errors import ConfigError
from pflnas.ops.primitives import DilConv, FactorizedReduce, ReLUConvBN, SepConv

# How a wide tensor is made of the per-edge ones (a rule of :attr:`WideOp.rules`).
CAT = "cat"  # concatenated along dim 0 (edge-major output channels)
FIRST = "first"  # one value equal on every edge (BatchNorm's num_batches_tracked)

Rules = dict[str, tuple[str, str]]


def _conv(proto: nn.Conv2d, c_in: int, c_out: int, groups: int) -> nn.Conv2d:
    return nn.Conv2d(
        c_in, c_out, proto.kernel_size, proto.stride, proto.padding, proto.dilation, groups=groups, bias=False
    )


def affine_free(proto: nn.BatchNorm2d) -> None:
    """Only an affine-free BatchNorm is per channel with no parameters, so only those join wide ones."""
    if proto.affine:
        raise ConfigError("the batched layout needs affine-free BatchNorm (a search supernet's)")


def bn_rules(wide: str, edge: str) -> Rules:
    """The rules of a BatchNorm over edge-major channels (``wide``) of per-edge BatchNorms (``edge``)."""
    rules = {f"{wide}.{b}": (f"{edge}.{b}", CAT) for b in ("running_mean", "running_var")}
    rules[f"{wide}.num_batches_tracked"] = (f"{edge}.num_batches_tracked", FIRST)
    return rules


class WideOp(nn.Module):
    """One op kind on ``edges`` edges of ``g`` stacked sources; ``forward`` takes the ReLU'd sources
    (``[B, g·C, H, W]``) and returns the outputs before the final BatchNorm (``[B, edges·C, H', W']``).
    ``rules`` maps each wide state_dict suffix to ``(per-edge suffix, rule)``; ``final_bn`` is the per-edge
    suffix of the BatchNorm left to the fan."""

    rules: Rules
    final_bn: str


class WideConv(WideOp):
    """``ReLUConvBN`` candidates: one conv from each source's C channels to its m·C (``groups=g``)."""

    final_bn = "2"

    def __init__(self, proto: ReLUConvBN, edges: int, g: int):
        super().__init__()
        conv = proto[1]
        affine_free(proto[2])
        self.conv = _conv(conv, g * conv.in_channels, edges * conv.out_channels, g)
        self.rules = {"conv.weight": ("1.weight", CAT)}

    def forward(self, r: Tensor) -> Tensor:
        return self.conv(r)


class WideDilConv(WideOp):
    """``DilConv`` candidates. ``fan_in``: the input is the g stacked C-channel sources, each repeated once
    per edge; otherwise it is already edges·C edge-major channels. The depthwise conv then runs on edges·C
    channels (a plain depthwise conv, fast everywhere, where a channel multiplier is slow on CPU), and the
    pointwise conv as one batched matrix product over the edges (a grouped 1x1 conv is slow on CPU, and a
    GEMM on GPU). ``bn``: keep the BatchNorm (a SepConv's inner one); otherwise it is the fan's."""

    final_bn = "3"

    def __init__(self, proto: DilConv, edges: int, g: int, fan_in: bool, edge: str = "", bn: bool = False):
        super().__init__()
        dw, pw = proto[1], proto[2]
        c = dw.in_channels
        self.edges, self.g, self.fan_in = edges, g, fan_in
        self.dw = _conv(dw, edges * c, edges * c, edges * c)
        self.pw = nn.Conv2d(edges * c, edges * pw.out_channels, 1, groups=edges, bias=False)  # see forward
        self.rules = {"dw.weight": (f"{edge}1.weight", CAT), "pw.weight": (f"{edge}2.weight", CAT)}
        affine_free(proto[3])
        self.bn = nn.BatchNorm2d(edges * proto[3].num_features, affine=False) if bn else None
        if bn:
            self.rules.update(bn_rules("bn", f"{edge}3"))

    def forward(self, r: Tensor) -> Tensor:
        b, c, h, w = r.shape
        if self.fan_in and self.edges > self.g:  # edge-major copies of each source (expand: one copy kernel)
            c //= self.g
            m = self.edges // self.g
            r = r.view(b, self.g, 1, c, h, w).expand(b, self.g, m, c, h, w).reshape(b, self.edges * c, h, w)
        else:
            c //= self.edges
        y = self.dw(r)
        h, w = y.shape[2:]
        weight = self.pw.weight.view(self.edges, -1, c)  # [edges, C_out, C_in]: edge j's 1x1 conv
        weight = weight.expand(b, *weight.shape).reshape(b * self.edges, *weight.shape[1:])
        y = torch.bmm(weight, y.reshape(b * self.edges, c, h * w)).view(b, -1, h, w)
        return y if self.bn is None else self.bn(y)


class WideSepConv(WideOp):
    """``SepConv`` candidates: a fan-in ``WideDilConv`` with its BatchNorm, ReLU, then a wide one (without)
    on the edges·C channels."""

    final_bn = "1.3"

    def __init__(self, proto: SepConv, edges: int, g: int):
        super().__init__()
        self.first = WideDilConv(proto[0], edges, g, fan_in=True, edge="0.", bn=True)
        self.second = WideDilConv(proto[1], edges, g, fan_in=False, edge="1.")
        self.rules = {
            **{f"first.{k}": v for k, v in self.first.rules.items()},
            **{f"second.{k}": v for k, v in self.second.rules.items()},
        }

    def forward(self, r: Tensor) -> Tensor:
        return self.second(torch.relu(self.first(r)))


class WideFactorizedReduce(WideOp):
    """``FactorizedReduce`` candidates (skip_connect at stride 2): each edge's block is its two halves."""

    final_bn = "bn"

    def __init__(self, proto: FactorizedReduce, edges: int, g: int):
        super().__init__()
        c_in, half = proto.conv_1.in_channels, proto.conv_1.out_channels
        affine_free(proto.bn)
        self.edges = edges
        self.conv_1 = _conv(proto.conv_1, g * c_in, edges * half, g)
        self.conv_2 = _conv(proto.conv_2, g * c_in, edges * half, g)
        self.rules = {"conv_1.weight": ("conv_1.weight", CAT), "conv_2.weight": ("conv_2.weight", CAT)}

    def forward(self, r: Tensor) -> Tensor:
        shifted = nn.functional.pad(r, (0, 1, 0, 1))[:, :, 1:, 1:]
        a, b = self.conv_1(r), self.conv_2(shifted)
        n, _, h, w = a.shape
        y = torch.stack([a.view(n, self.edges, -1, h, w), b.view(n, self.edges, -1, h, w)], dim=2)
        return y.view(n, -1, h, w)


def widen(name: str, proto: nn.Module, edges: int, g: int = 1) -> WideOp:
    """The wide form of the per-edge candidate ``proto`` (op ``name``) for ``edges`` edges of ``g`` stacked
    sources (``edges // g`` each)."""
    if isinstance(proto, SepConv):
        return WideSepConv(proto, edges, g)
    if isinstance(proto, DilConv):
        return WideDilConv(proto, edges, g, fan_in=True)
    if isinstance(proto, ReLUConvBN):
        return WideConv(proto, edges, g)
    if isinstance(proto, FactorizedReduce):
        return WideFactorizedReduce(proto, edges, g)
    raise ConfigError(f"op {name!r} has no batched form; use space.layout=per_source")
