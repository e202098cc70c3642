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

PC-DARTS' partial channels batch too: every edge leaving a node sees the same first C/K channels, so the wide
and parameter-free ops run on them once, and the untouched channels, which every such edge passes through
alike, are pooled and shuffled in once for all the node's edges (:func:`reassemble`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pflnas.errors import ConfigError
from pflnas.ops.primitives import DilConv, FactorizedReduce, ReLUConvBN, SepConv
from pflnas.supernet.mixed import candidate, split_ops

# Checkpoints record it: 2 since depthwise weights are edge-major (CAT), 1 had them interleaved.
BATCHED_FORMAT = 2

# How a wide tensor is made of the per-edge ones (a rule of :attr:`WideOp.rules`).
CAT = "cat"  # concatenated along dim 0 (edge-major output channels)
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


class WideOp(nn.Module):
    """One op kind on ``m`` edges; ``forward`` takes the ReLU'd source. ``rules`` maps each wide
    state_dict suffix to ``(per-edge suffix, rule)``."""

    rules: Rules


class WideConvBN(WideOp):
    """m ``ReLUConvBN``: conv C -> m·C, BatchNorm over m·C."""

    def __init__(self, proto: ReLUConvBN, m: int):
        super().__init__()
        conv = proto[1]
        self.conv = _conv(conv, conv.in_channels, m * conv.out_channels, 1)
        self.bn, bn_rules = _bn(proto[2], m, "bn", "2")
        self.rules = {"conv.weight": ("1.weight", CAT), **bn_rules}

    def forward(self, r: Tensor) -> Tensor:
        return self.bn(self.conv(r))


class WideDilConv(WideOp):
    """m ``DilConv``. ``fan_in``: the input is the shared C-channel source, repeated once per edge;
    otherwise it is already m·C edge-major channels. The depthwise conv then runs on m·C channels (a plain
    depthwise conv, fast everywhere, where a channel multiplier is slow on CPU), and the pointwise conv as one
    batched matrix product over the edges (a grouped 1x1 conv is slow on CPU, and a GEMM on GPU)."""

    def __init__(self, proto: DilConv, m: int, fan_in: bool, edge: str = ""):
        super().__init__()
        dw, pw = proto[1], proto[2]
        c = dw.in_channels
        self.m, self.fan_in = m, fan_in
        self.dw = _conv(dw, m * c, m * c, m * c)
        self.pw = nn.Conv2d(m * c, m * pw.out_channels, 1, groups=m, bias=False)  # its weight; see forward
        self.bn, bn_rules = _bn(proto[3], m, "bn", f"{edge}3")
        self.rules = {
            "dw.weight": (f"{edge}1.weight", CAT),
            "pw.weight": (f"{edge}2.weight", CAT),
            **bn_rules,
        }

    def forward(self, r: Tensor) -> Tensor:
        b, c, h, w = r.shape
        if self.fan_in and self.m > 1:  # edge-major copies of the source (expand: one copy kernel)
            c *= self.m
            r = r.unsqueeze(1).expand(b, self.m, *r.shape[1:]).reshape(b, c, h, w)
        y = self.dw(r)
        h, w = y.shape[2:]
        weight = self.pw.weight.view(self.m, -1, c // self.m)  # [m, C_out, C_in]: edge j's 1x1 conv
        weight = weight.expand(b, *weight.shape).reshape(b * self.m, *weight.shape[1:])
        y = torch.bmm(weight, y.reshape(b * self.m, c // self.m, h * w))
        return self.bn(y.view(b, -1, h, w))


class WideSepConv(WideOp):
    """m ``SepConv``: a fan-in ``WideDilConv``, ReLU, then a wide one on the m·C channels."""

    def __init__(self, proto: SepConv, m: int):
        super().__init__()
        self.first = WideDilConv(proto[0], m, fan_in=True, edge="0.")
        self.second = WideDilConv(proto[1], m, fan_in=False, edge="1.")
        self.rules = {
            **{f"first.{k}": v for k, v in self.first.rules.items()},
            **{f"second.{k}": v for k, v in self.second.rules.items()},
        }

    def forward(self, r: Tensor) -> Tensor:
        return self.second(torch.relu(self.first(r)))


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


def reassemble(x: Tensor, mixed: Tensor, partial: int, stride: int) -> Tensor:
    """PC-DARTS' channel reassembly (``MixedEdge`` does it per edge) of all ``m`` edges leaving ``x`` at once.

    ``mixed``: ``[B, m, C/K, H, W]`` from :func:`mix_source`; the bypassed channels ``x[:, C/K:]`` (max-pooled
    2x2 at stride 2) are the same for every edge, so they are pooled once and broadcast, then one channel
    shuffle with ``partial`` groups runs over every edge's channel axis. Returns ``[B, m, C, H, W]``.
    """
    rest = x[:, mixed.shape[2] :]
    if stride == 2:
        rest = nn.functional.max_pool2d(rest, 2, 2, ceil_mode=True)
    b, m = mixed.shape[:2]
    out = torch.cat([mixed, rest.unsqueeze(1).expand(b, m, *rest.shape[1:])], dim=2)
    c, h, w = out.shape[2:]
    return out.view(b, m, partial, c // partial, h, w).transpose(2, 3).reshape(b, m, c, h, w)


def mix_source(
    ops: Sequence[str], wide: dict[str, Tensor], free: dict[str, Tensor], weights: Tensor, free_cols: Tensor
) -> Tensor:
    """``[B, m, C, H, W]``: each edge's weighted sum over the candidates. ``weights``: ``[m, num_ops]``
    rows of the source's edges; ``free`` outputs are shared by every edge, so they mix as one batched matrix
    product (``[m, F] @ [F, C*H*W]`` per sample, F parameter-free ops, columns ``free_cols`` of ``weights``)
    instead of F broadcast products: fewer kernels and one pass over memory (an explicit ``bmm``:
    ``matmul`` would fold the batch and transpose both sides through copies)."""
    m = weights.shape[0]
    out: Tensor | None = None
    if free:
        z = torch.stack(list(free.values()), 1)  # [B, F, C, H, W], F in op order
        b, f = z.shape[:2]
        wf = weights.index_select(1, free_cols).expand(b, m, f)
        out = torch.bmm(wf, z.reshape(b, f, -1)).view(b, m, *z.shape[2:])  # reshape: channels_last copies
    for i, name in enumerate(ops):
        if name in wide:
            y = wide[name]
            y = y.view(y.shape[0], m, -1, *y.shape[2:])
            w = weights[:, i].view(1, m, 1, 1, 1)
            out = y * w if out is None else torch.addcmul(out, y, w)
    assert out is not None, "a mixed edge needs at least one op other than 'none'"
    return out


class BatchedNodes(nn.Module):
    """The DAG of one cell in the batched layout: a :class:`SourceFan` per source node; the cell's
    per-source parameter-free ops come in ``forward``. Every node sums its incoming edges' slices of the
    sources' mixes. ``partial`` > 1: PC-DARTS' partial channels (the ops see ``channels // partial``)."""

    def __init__(
        self,
        ops: Sequence[str],
        edges: list[tuple[int, int]],
        nodes: Sequence[int],
        channels: int,
        strides: dict[int, int],
        pool_bn: bool,
        partial: int = 1,
    ):
        super().__init__()
        if partial < 1 or channels % partial:
            raise ValueError(f"partial channels: {channels} channels do not split into {partial} parts")
        self.ops, self.nodes = list(ops), list(nodes)
        self.partial, self.strides = partial, dict(strides)
        self.out_edges = {s: [i for i, (_, src) in enumerate(edges) if src == s] for s in strides}
        self.slot = {(n, s): self.out_edges[s].index(i) for i, (n, s) in enumerate(edges)}
        part = channels // partial  # PC-DARTS: the ops see the first 1/partial of the channels
        self.fans = nn.ModuleDict(
            {str(s): SourceFan(ops, part, strides[s], pool_bn, len(e)) for s, e in self.out_edges.items()}
        )
        order = [i for s in sorted(self.out_edges) for i in self.out_edges[s]]
        self.register_buffer("order", torch.tensor(order, dtype=torch.long), persistent=False)
        for s, stride in strides.items():
            free = split_ops(ops, stride)[1]
            cols = torch.tensor([self.ops.index(n) for n in free], dtype=torch.long)
            self.register_buffer(f"free_cols_{s}", cols, persistent=False)

    def forward(self, inputs: list[Tensor], weights: Tensor, free_ops: nn.ModuleDict) -> list[Tensor]:
        states = list(inputs)
        by_source = weights.index_select(0, self.order)  # edges grouped by source: one gather per cell
        rows, start = {}, 0
        for s in sorted(self.out_edges):
            rows[s], start = by_source[start : start + len(self.out_edges[s])], start + len(self.out_edges[s])
        parts: dict[int, tuple[Tensor, ...]] = {}  # per source: its edges' outputs, in slot order

        def expand(s: int) -> None:
            if s in self.out_edges:
                mixed = self.source_mix(s, states[s], rows[s], free_ops)
                parts[s] = mixed.unbind(1)  # one op (its backward one stack), not a select per edge

        for s in range(len(inputs)):
            expand(s)
        for node in self.nodes:
            total: Tensor | None = None
            for src in range(node):
                y = parts[src][self.slot[(node, src)]]
                total = y if total is None else total + y
            assert total is not None
            states.append(total)
            expand(node)
        return states

    def source_mix(self, s: int, x: Tensor, rows: Tensor, free_ops: nn.ModuleDict) -> Tensor:
        """``[B, m, C, H, W]``: the mixes of every edge leaving source ``s`` (input ``x``); with partial
        channels the ops run on ``x``'s first ``C/partial`` channels and :func:`reassemble` adds the rest."""
        part = x[:, : x.shape[1] // self.partial] if self.partial > 1 else x
        cols = getattr(self, f"free_cols_{s}")
        y = mix_source(self.ops, self.fans[str(s)](part), free_ops[str(s)](part), rows, cols)
        return reassemble(x, y, self.partial, self.strides[s]) if self.partial > 1 else y
