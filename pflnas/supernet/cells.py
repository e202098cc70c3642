"""Search cells: a DARTS cell (2 inputs, concat output) and a NAS-Bench-201 cell (1 input, last node)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pflnas.ops.primitives import FactorizedReduce, ReLUConvBN
from pflnas.spaces.config import SpaceConfig
from pflnas.spaces.labels import edge_key
from pflnas.supernet.batched import BatchedNodes
from pflnas.supernet.mixed import MixedEdge, SourceOps, split_ops


class SearchCell(nn.Module):
    """The edges of one cell over ``space.edges()``, each a :class:`MixedEdge`.

    ``forward_nodes(inputs, weights)`` runs the DAG: ``weights`` is ``[num_edges, num_ops]`` in
    ``space.edges()`` order. Parameter-free outputs are computed once per source node when ``share``.
    ``batched`` (implies ``share``): no per-edge modules; the trainable candidates of all edges leaving a
    node run as wide ops (:class:`~pflnas.supernet.batched.BatchedNodes`).
    """

    def __init__(
        self,
        space: SpaceConfig,
        channels: int,
        reduction: bool,
        share: bool,
        partial: int = 1,
        batched: bool = False,
    ):
        super().__init__()
        self.space = space
        self.share = share = share or batched
        self.part = channels // partial  # PC-DARTS partial channels: the ops see the first 1/partial
        cell_type = "reduce" if reduction else "normal"
        self.edge_list = space.edges()
        sources = sorted({src for _, src in self.edge_list})
        self.batched: BatchedNodes | None = None
        if batched:
            strides = {src: space.edge_stride(cell_type, src) for src in sources}
            self.batched = BatchedNodes(
                space.ops, self.edge_list, space.node_ids(), channels, strides, space.pool_bn, partial
            )
        self.edges = nn.ModuleDict(
            {
                edge_key(node, src): MixedEdge(
                    space.ops, channels, space.edge_stride(cell_type, src), space.pool_bn, share, partial
                )
                for node, src in ([] if batched else self.edge_list)
            }
        )
        self.source_ops = nn.ModuleDict()
        if share and not batched:  # the batched fans run the parameter-free ops themselves
            for src in sources:
                stride = space.edge_stride(cell_type, src)
                free = split_ops(space.ops, stride)[1]
                self.source_ops[str(src)] = SourceOps(free, self.part, stride, space.pool_bn)

    active: list[int] | None = None  # single path: the op index of every edge (set by the supernet)

    def forward_nodes(self, inputs: list[Tensor], weights: Tensor) -> list[Tensor]:
        if self.batched is not None:
            if self.active is not None:
                raise NotImplementedError("the batched layout has no single-path forward")
            return self.batched(inputs, weights)
        states = list(inputs)
        free: dict[int, dict[str, Tensor]] = {}
        index = 0
        for node in self.space.node_ids():
            total: Tensor | None = None
            for src in range(node):
                edge = self.edges[edge_key(node, src)]
                if self.active is not None:
                    name = edge.names[self.active[index]]
                    shared = self.source_ops[str(src)].ops if self.share else None
                    free_op = shared[name] if shared is not None and name in shared else None
                    y = edge.forward_single(states[src], weights[index], self.active[index], free_op)
                    total = y if total is None else total + y
                    index += 1
                    continue
                if self.share and src not in free:
                    free[src] = self.source_ops[str(src)](states[src][:, : self.part])
                y = edge(states[src], weights[index], free.get(src))
                total = y if total is None else total + y
                index += 1
            assert total is not None
            states.append(total)
        return states


class DartsSearchCell(SearchCell):
    """DARTS ``model_search.Cell``: preprocess both inputs to ``channels``, concat the intermediates."""

    def __init__(
        self,
        space: SpaceConfig,
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        share: bool,
        partial: int = 1,
        batched: bool = False,
    ):
        super().__init__(space, channels, reduction, share, partial, batched)
        self.reduction = reduction
        self.preprocess0 = (
            FactorizedReduce(c_prev_prev, channels, affine=False)
            if reduction_prev
            else ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine=False)
        )
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0, affine=False)

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        states = self.forward_nodes([self.preprocess0(s0), self.preprocess1(s1)], weights)
        return torch.cat([states[i] for i in self.space.concat()], dim=1)


class NB201SearchCell(SearchCell):
    """NAS-Bench-201 search cell: one input, output is the last node."""

    def __init__(
        self, space: SpaceConfig, channels: int, share: bool, partial: int = 1, batched: bool = False
    ):
        super().__init__(space, channels, reduction=False, share=share, partial=partial, batched=batched)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        return self.forward_nodes([x], weights)[-1]
