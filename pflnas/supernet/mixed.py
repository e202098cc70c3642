"""Mixed edges, with parameter-free ops computed once per source node.

A parameter-free op (pooling, identity) applied to the same source node at the same stride gives the same
output on every edge that leaves that node, so a cell computes those outputs once per source
(:class:`SourceOps`) and every :class:`MixedEdge` reads them. Trainable ops stay per edge. The ``none`` op
contributes exact zeros and is skipped (its weight still takes part in the softmax).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pflnas.ops import PARAM_FREE, TRAINABLE, create_op, get_op


def candidate(name: str, channels: int, stride: int, pool_bn: bool) -> nn.Module:
    """A supernet candidate: affine-free BN as in DARTS' search, plus BN after pooling when ``pool_bn``."""
    module = create_op(name, channels, channels, stride, affine=False)
    if pool_bn and isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        module = nn.Sequential(module, nn.BatchNorm2d(channels, affine=False))
    return module


def split_ops(ops: Sequence[str], stride: int) -> tuple[list[str], list[str]]:
    """``(trainable, parameter_free)`` op names at ``stride``; ``none`` is in neither."""
    trainable = [op for op in ops if get_op(op).role(stride) == TRAINABLE]
    free = [op for op in ops if get_op(op).role(stride) == PARAM_FREE]
    return trainable, free


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave ``groups`` channel groups (ShuffleNet; PC-DARTS mixes the processed and bypassed parts)."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def reassemble_partial(x: Tensor, mixed: Tensor, partial: int, bypass: nn.Module | None) -> Tensor:
    """PC-DARTS' edge output: ``mixed`` (the ops' mix of the first ``mixed.shape[1]`` channels of ``x``),
    the untouched channels of ``x`` after it (through ``bypass``, the max-pool of a stride-2 edge), then the
    channel shuffle with ``partial`` groups."""
    rest = x[:, mixed.shape[1] :]
    if bypass is not None:
        rest = bypass(rest)
    return channel_shuffle(torch.cat([mixed, rest], dim=1), partial)


class SourceOps(nn.Module):
    """The parameter-free candidates applied to one tensor; returns ``{op name: output}``."""

    def __init__(self, names: Sequence[str], channels: int, stride: int, pool_bn: bool):
        super().__init__()
        self.ops = nn.ModuleDict({n: candidate(n, channels, stride, pool_bn) for n in names})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {name: op(x) for name, op in self.ops.items()}


class MixedEdge(nn.Module):
    """``sum_k w_k * op_k(x)`` over the space's ops.

    With ``shared=True`` the parameter-free outputs come from the caller (one :class:`SourceOps` per
    source node); otherwise the edge owns its own copies (the DARTS layout, kept for benchmarks).
    """

    def __init__(
        self, ops: Sequence[str], channels: int, stride: int, pool_bn: bool, shared: bool, partial: int = 1
    ):
        super().__init__()
        if partial < 1 or channels % partial:
            raise ValueError(f"partial channels: {channels} channels do not split into {partial} parts")
        self.names = list(ops)
        self.stride, self.partial = stride, partial
        channels = self.part = channels // partial  # PC-DARTS: the ops see 1/partial of the channels
        self.bypass = nn.MaxPool2d(2, 2, ceil_mode=True) if partial > 1 and stride == 2 else None
        trainable, free = split_ops(ops, stride)
        self.trainable = nn.ModuleDict({n: candidate(n, channels, stride, pool_bn) for n in trainable})
        self.own_free = None if shared else SourceOps(free, channels, stride, pool_bn)
        self._terms = [(i, n) for i, n in enumerate(self.names) if not get_op(n).is_zero]
        if not self._terms:
            raise ValueError("a mixed edge needs at least one op other than 'none'")
        self.zero = next(
            (create_op(n, channels, channels, stride) for n in self.names if get_op(n).is_zero), None
        )

    def forward_single(
        self, x: Tensor, weights: Tensor, index: int, free_op: nn.Module | None = None
    ) -> Tensor:
        """Single-path forward (GDAS): only op ``index`` runs; ``weights`` is a hard one-hot whose other
        entries are added as scalars so their straight-through gradients still reach the alphas (as in
        GDAS' reference code). ``free_op`` is the shared module of a parameter-free op, if it is one."""
        if self.partial > 1:
            return self._reassemble(x, self._single(x[:, : self.part], weights, index, free_op))
        return self._single(x, weights, index, free_op)

    def _single(self, x: Tensor, weights: Tensor, index: int, free_op: nn.Module | None) -> Tensor:
        name = self.names[index]
        if get_op(name).is_zero:
            assert self.zero is not None
            y = self.zero(x)
        elif name in self.trainable:
            y = self.trainable[name](x)
        elif self.own_free is not None:
            y = self.own_free.ops[name](x)
        else:
            assert free_op is not None, "a shared MixedEdge needs its source's parameter-free module"
            y = free_op(x)
        return weights[index] * y + (weights.sum() - weights[index])

    def _reassemble(self, x: Tensor, mixed: Tensor) -> Tensor:
        return reassemble_partial(x, mixed, self.partial, self.bypass)

    def forward(self, x: Tensor, weights: Tensor, free: dict[str, Tensor] | None = None) -> Tensor:
        """``free``: the parameter-free outputs of the edge's (partial) input, from its source's SourceOps."""
        if self.partial > 1:
            return self._reassemble(x, self._mix(x[:, : self.part], weights, free))
        return self._mix(x, weights, free)

    def _mix(self, x: Tensor, weights: Tensor, free: dict[str, Tensor] | None) -> Tensor:
        if self.own_free is not None:
            free = self.own_free(x)
        assert free is not None, "a shared MixedEdge needs the parameter-free outputs of its source"
        out: Tensor | None = None
        for i, name in self._terms:
            y = free[name] if name in free else self.trainable[name](x)
            out = weights[i] * y if out is None else out + weights[i] * y
        assert out is not None
        return out


class MixedOp(nn.Module):
    """``sum_k w_k * op_k(x)`` over the candidates of one block slot (a bottleneck's spatial op or a
    transformer's token mixer), each built in the space's context."""

    def __init__(self, ops: Sequence[str], channels: int, stride: int, context: str, heads: int = 1):
        super().__init__()
        self.names = list(ops)
        self.ops = nn.ModuleList(
            create_op(n, channels, channels, stride, context=context, heads=heads) for n in self.names
        )

    active: int | None = None  # set by a single-path supernet before each forward: run only this op

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        if self.active is not None:  # single path (GDAS): see MixedEdge.forward_single
            i = self.active
            return weights[i] * self.ops[i](x) + (weights.sum() - weights[i])
        out: Tensor | None = None
        for i, op in enumerate(self.ops):
            y = weights[i] * op(x)
            out = y if out is None else out + y
        assert out is not None
        return out
