"""The batched layout: the trainable candidates of one kind on all edges leaving a node run as one wider op.

Every edge leaving a source node reads the same tensor, and every DARTS cell candidate starts with a ReLU, so
for ``m`` edges the ReLU runs once and each op kind runs once with ``m`` times the output channels: a conv
from C to m·C channels; a separable or dilated conv as a depthwise conv with channel multiplier m followed by
a pointwise conv with ``groups=m``; an affine-free BatchNorm over m·C channels, which has per-channel
statistics and so equals m separate BatchNorms. Each edge keeps its own weights (a slice of the wide ones),
so the layout computes exactly what the per-edge layout computes; :mod:`pflnas.supernet.layouts` converts
the parameters between the two. Parameter-free ops are computed once per source, as in ``per_source``.

Wide tensors are edge-major: channels ``[j*C, (j+1)*C)`` belong to the j-th edge leaving the node (edges in
``space.edges()`` order).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pflnas.errors import ConfigError
from pflnas.ops import get_op
from pflnas.ops.primitives import DilConv, FactorizedReduce, ReLUConvBN, SepConv
from pflnas.supernet.mixed import candidate, split_ops

# How a wide tensor is made of the per-edge ones (a rule of :attr:`WideOp.rules`).
CAT = "cat"  # concatenated along dim 0 (edge-major output channels)
INTERLEAVE = "interleave"  # depthwise conv with channel multiplier m: row c*m + j is edge j's channel c
FIRST = "first"  # one value equal on every edge (BatchNorm's num_batches_tracked)

Rules = dict[str, tuple[str, str]]


def _conv(proto: nn.Conv2d, c_in: int, c_out: int, groups: int) -> nn.Conv2d:
    return nn.Conv2d(
        c_in, c_out, proto.kernel_size, proto.stride, proto.padding, proto.dilation, groups=groups, bias=False
    )


def _bn(proto: nn.BatchNorm2d, m: int, wide: str, edge: str) -> tuple[nn.BatchNorm2d, Rules]:
    if proto.affine:
        raise ConfigError("the batched layout needs affine-free BatchNorm (a search supernet's)")
    rules = {f"{wide}.{b}": (f"{edge}.{b}", CAT) for b in ("running_mean", "running_var")}
    rules[f"{wide}.num_batches_tracked"] = (f"{edge}.num_batches_tracked", FIRST)
    return nn.BatchNorm2d(m * proto.num_features, affine=False), rules


def _rows(t: Tensor, j: int, m: int) -> Tensor:
    """Edge ``j``'s block of a CAT tensor (a view)."""
    n = t.shape[0] // m
    return t[j * n : (j + 1) * n]


def _bn_edges(bn: nn.BatchNorm2d, ys: Sequence[Tensor], slots: Sequence[int], m: int) -> list[Tensor]:
    """``bn`` on some of its edges, each output ``ys[i]`` with edge ``slots[i]``'s slice of the running
    statistics, updated in place as that edge's own BatchNorm would be. The batch is counted once
    (``num_batches_tracked``, rule FIRST) however many edges run: with a momentum set the count does not
    change any result; with momentum None (a cumulative average) a slice's factor is ``1/count``, equal
    to its own BatchNorm's as long as its edge ran in every counted forward (a fixed path)."""
    factor = 0.0  # as torch's _BatchNorm.forward
    if bn.training and bn.track_running_stats:
        assert bn.num_batches_tracked is not None
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch = bn.training or bn.running_mean is None
    out = []
    for y, j in zip(ys, slots):
        mean = None if bn.running_mean is None else _rows(bn.running_mean, j, m)
        var = None if bn.running_var is None else _rows(bn.running_var, j, m)
        out.append(F.batch_norm(y, mean, var, None, None, use_batch, factor, bn.eps))
    return out


def _conv_edge(conv: nn.Conv2d, x: Tensor, weight: Tensor, groups: int) -> Tensor:
    return F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation, groups)


class WideOp(nn.Module):
    """One op kind on ``m`` edges; ``forward`` takes the ReLU'd source. ``rules`` maps each wide
    state_dict suffix to ``(per-edge suffix, rule)``. ``forward_edges(r, slots)`` (single path) runs
    only the edges ``slots``, each with its own slice of the parameters and running statistics."""

    rules: Rules
    m: int

    def forward_edges(self, r: Tensor, slots: Sequence[int]) -> list[Tensor]:
        raise NotImplementedError


class WideConvBN(WideOp):
    """m ``ReLUConvBN``: conv C -> m·C, BatchNorm over m·C."""

    def __init__(self, proto: ReLUConvBN, m: int):
        super().__init__()
        conv = proto[1]
        self.m = m
        self.conv = _conv(conv, conv.in_channels, m * conv.out_channels, 1)
        self.bn, bn_rules = _bn(proto[2], m, "bn", "2")
        self.rules = {"conv.weight": ("1.weight", CAT), **bn_rules}

    def forward(self, r: Tensor) -> Tensor:
        return self.bn(self.conv(r))

    def forward_edges(self, r: Tensor, slots: Sequence[int]) -> list[Tensor]:
        w = self.conv.weight
        ys = [_conv_edge(self.conv, r, _rows(w, j, self.m), 1) for j in slots]
        return _bn_edges(self.bn, ys, slots, self.m)


class WideDilConv(WideOp):
    """m ``DilConv``. ``fan_in``: the input is the shared C-channel source (depthwise with channel
    multiplier m, then reordered edge-major); otherwise it is already m·C edge-major channels."""

    def __init__(self, proto: DilConv, m: int, fan_in: bool, edge: str = ""):
        super().__init__()
        dw, pw = proto[1], proto[2]
        c = dw.in_channels
        self.m, self.fan_in = m, fan_in
        self.dw = _conv(dw, c if fan_in else m * c, m * c, c if fan_in else m * c)
        self.pw = nn.Conv2d(m * c, m * pw.out_channels, 1, groups=m, bias=False)
        self.bn, bn_rules = _bn(proto[3], m, "bn", f"{edge}3")
        self.rules = {
            "dw.weight": (f"{edge}1.weight", INTERLEAVE if fan_in else CAT),
            "pw.weight": (f"{edge}2.weight", CAT),
            **bn_rules,
        }

    def forward(self, r: Tensor) -> Tensor:
        y = self.dw(r)
        if self.fan_in and self.m > 1:  # channel-major (c, edge) -> edge-major (edge, c)
            b, _, h, w = y.shape
            y = y.view(b, -1, self.m, h, w).transpose(1, 2).reshape(b, -1, h, w)
        return self.bn(self.pw(y))

    def forward_edges(self, r: Tensor, slots: Sequence[int]) -> list[Tensor]:
        return self.edges_of([r] * len(slots), slots)

    def edges_of(self, xs: Sequence[Tensor], slots: Sequence[int]) -> list[Tensor]:
        """Edge ``slots[i]`` on ``xs[i]`` (its C-channel input)."""
        m, w = self.m, self.dw.weight
        c = w.shape[0] // m
        ys = []
        for x, j in zip(xs, slots):
            dw = w.view(c, m, *w.shape[1:])[:, j] if self.fan_in else _rows(w, j, m)
            y = _conv_edge(self.dw, x, dw, c)
            ys.append(F.conv2d(y, _rows(self.pw.weight, j, m)))
        return _bn_edges(self.bn, ys, slots, m)


class WideSepConv(WideOp):
    """m ``SepConv``: a fan-in ``WideDilConv``, ReLU, then a wide one on the m·C channels."""

    def __init__(self, proto: SepConv, m: int):
        super().__init__()
        self.m = m
        self.first = WideDilConv(proto[0], m, fan_in=True, edge="0.")
        self.second = WideDilConv(proto[1], m, fan_in=False, edge="1.")
        self.rules = {
            **{f"first.{k}": v for k, v in self.first.rules.items()},
            **{f"second.{k}": v for k, v in self.second.rules.items()},
        }

    def forward(self, r: Tensor) -> Tensor:
        return self.second(torch.relu(self.first(r)))

    def forward_edges(self, r: Tensor, slots: Sequence[int]) -> list[Tensor]:
        return self.second.edges_of([torch.relu(y) for y in self.first.forward_edges(r, slots)], slots)


class WideFactorizedReduce(WideOp):
    """m ``FactorizedReduce`` (skip_connect at stride 2): each edge's block is its two halves."""

    def __init__(self, proto: FactorizedReduce, m: int):
        super().__init__()
        c_in, half = proto.conv_1.in_channels, proto.conv_1.out_channels
        self.m = m
        self.conv_1 = _conv(proto.conv_1, c_in, m * half, 1)
        self.conv_2 = _conv(proto.conv_2, c_in, m * half, 1)
        self.bn, bn_rules = _bn(proto.bn, m, "bn", "bn")
        self.rules = {
            "conv_1.weight": ("conv_1.weight", CAT),
            "conv_2.weight": ("conv_2.weight", CAT),
            **bn_rules,
        }

    def forward(self, r: Tensor) -> Tensor:
        shifted = nn.functional.pad(r, (0, 1, 0, 1))[:, :, 1:, 1:]
        a, b = self.conv_1(r), self.conv_2(shifted)
        n, _, h, w = a.shape
        y = torch.stack([a.view(n, self.m, -1, h, w), b.view(n, self.m, -1, h, w)], dim=2)
        return self.bn(y.reshape(n, -1, h, w))

    def forward_edges(self, r: Tensor, slots: Sequence[int]) -> list[Tensor]:
        shifted = nn.functional.pad(r, (0, 1, 0, 1))[:, :, 1:, 1:]
        ys = [
            torch.cat(
                [
                    _conv_edge(self.conv_1, r, _rows(self.conv_1.weight, j, self.m), 1),
                    _conv_edge(self.conv_2, shifted, _rows(self.conv_2.weight, j, self.m), 1),
                ],
                dim=1,
            )
            for j in slots
        ]
        return _bn_edges(self.bn, ys, slots, self.m)


def widen(name: str, proto: nn.Module, m: int) -> WideOp:
    """The wide form of the per-edge candidate ``proto`` (op ``name``) for ``m`` edges."""
    if isinstance(proto, SepConv):
        return WideSepConv(proto, m)
    if isinstance(proto, DilConv):
        return WideDilConv(proto, m, fan_in=True)
    if isinstance(proto, ReLUConvBN):
        return WideConvBN(proto, m)
    if isinstance(proto, FactorizedReduce):
        return WideFactorizedReduce(proto, m)
    raise ConfigError(f"op {name!r} has no batched form; use space.layout=per_source")


class SourceFan(nn.Module):
    """The trainable candidates of every edge leaving one source node, one wide op per kind."""

    def __init__(self, ops: Sequence[str], channels: int, stride: int, pool_bn: bool, m: int):
        super().__init__()
        self.m = m
        trainable = split_ops(ops, stride)[0]
        self.wide = nn.ModuleDict(
            {n: widen(n, candidate(n, channels, stride, pool_bn), m) for n in trainable}
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if not self.wide:
            return {}
        r = torch.relu(x)  # every cell candidate starts with ReLU: once for all kinds and edges
        return {name: op(r) for name, op in self.wide.items()}


def mix_source(
    ops: Sequence[str], wide: dict[str, Tensor], free: dict[str, Tensor], weights: Tensor
) -> Tensor:
    """``[B, m, C, H, W]``: each edge's weighted sum over the candidates. ``weights``: ``[m, num_ops]``
    rows of the source's edges; ``free`` outputs are shared by every edge (broadcast)."""
    m = weights.shape[0]
    out: Tensor | None = None
    for i, name in enumerate(ops):
        if get_op(name).is_zero:
            continue
        if name in wide:
            y = wide[name]
            y = y.view(y.shape[0], m, -1, *y.shape[2:])
        else:
            y = free[name].unsqueeze(1)
        w = weights[:, i].view(1, m, 1, 1, 1)
        out = y * w if out is None else torch.addcmul(out, y, w)
    assert out is not None, "a mixed edge needs at least one op other than 'none'"
    return out


class BatchedNodes(nn.Module):
    """The DAG of one cell in the batched layout: a :class:`SourceFan` per source node; the cell's
    per-source parameter-free ops come in ``forward``. Every node sums its incoming edges' slices of the
    sources' mixes."""

    def __init__(
        self,
        ops: Sequence[str],
        edges: list[tuple[int, int]],
        nodes: Sequence[int],
        channels: int,
        strides: dict[int, int],
        pool_bn: bool,
    ):
        super().__init__()
        self.ops, self.nodes = list(ops), list(nodes)
        self.out_edges = {s: [i for i, (_, src) in enumerate(edges) if src == s] for s in strides}
        self.slot = {(n, s): self.out_edges[s].index(i) for i, (n, s) in enumerate(edges)}
        self.fans = nn.ModuleDict(
            {str(s): SourceFan(ops, channels, strides[s], pool_bn, len(e)) for s, e in self.out_edges.items()}
        )
        order = [i for s in sorted(self.out_edges) for i in self.out_edges[s]]
        self.register_buffer("order", torch.tensor(order, dtype=torch.long), persistent=False)

    def forward(self, inputs: list[Tensor], weights: Tensor, free_ops: nn.ModuleDict) -> list[Tensor]:
        states = list(inputs)
        by_source = weights.index_select(0, self.order)  # edges grouped by source: one gather per cell
        rows, start = {}, 0
        for s in sorted(self.out_edges):
            rows[s], start = by_source[start : start + len(self.out_edges[s])], start + len(self.out_edges[s])
        mixed: dict[int, Tensor] = {}

        def expand(s: int) -> None:
            if s in self.out_edges:
                x = states[s]
                mixed[s] = mix_source(self.ops, self.fans[str(s)](x), free_ops[str(s)](x), rows[s])

        for s in range(len(inputs)):
            expand(s)
        for node in self.nodes:
            total: Tensor | None = None
            for src in range(node):
                y = mixed[src][:, self.slot[(node, src)]]
                total = y if total is None else total + y
            assert total is not None
            states.append(total)
            expand(node)
        return states
