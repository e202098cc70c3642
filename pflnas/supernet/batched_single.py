"""The single-path forward of the batched layout (GDAS, SPOS and every :class:`PathSelector` user).

Each edge runs only its selected op, exactly as :meth:`~pflnas.supernet.mixed.MixedEdge.forward_single`
does in the ``per_source`` layout: the ``none`` op gives zeros, a parameter-free op runs the source's shared
module (once per edge that selected it, as there), and a trainable op runs edge ``j``'s slice of its kind's
wide op (:meth:`~pflnas.supernet.batched.WideOp.forward_edges`) on the source's ReLU, computed once. The
edges of one source that selected the same trainable kind go to one ``forward_edges`` call, so the wide
BatchNorm counts the batch once (see :func:`pflnas.supernet.batched._bn_edges` for what that means for
``num_batches_tracked``). The result of edge ``i`` with op ``k`` is ``w[i,k]*y + (w[i].sum() - w[i,k])``,
the straight-through form of ``forward_single``.

One difference remains, in the optimizer rather than the forward: a per-edge module off the path gets no
gradient, so torch's optimizers skip it, while a wide parameter one of whose edges ran has a gradient on
every slice (zeros off the path), so weight decay and momentum also move the slices of edges that did not
run. Without momentum and weight decay the layouts agree exactly (tests/test_batched_single_path.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pflnas.ops import get_op
from pflnas.ops.primitives import Zero
from pflnas.supernet.batched import BatchedNodes


def _source_edges(
    nodes: BatchedNodes,
    src: int,
    x: Tensor,
    weights: Tensor,
    active: Sequence[int],
    free_ops: nn.ModuleDict,
    stride: int,
) -> dict[int, Tensor]:
    """``{edge index: output}`` for every edge leaving ``src`` (input ``x``)."""
    fan = nodes.fans[str(src)]
    raw: dict[int, Tensor] = {}
    kinds: dict[str, list[int]] = {}  # trainable kind -> the edges (indices) that selected it
    for i in nodes.out_edges[src]:
        name = nodes.ops[active[i]]
        if get_op(name).is_zero:
            raw[i] = Zero(x.shape[1], stride)(x)
        elif name in fan.wide:
            kinds.setdefault(name, []).append(i)
        else:
            raw[i] = free_ops[str(src)].ops[name](x)
    if kinds:
        r = torch.relu(x)  # every cell candidate starts with ReLU: once per source
        for name, edges in kinds.items():
            slots = [nodes.out_edges[src].index(i) for i in edges]
            raw.update(zip(edges, fan.wide[name].forward_edges(r, slots)))
    out = {}
    for i, y in raw.items():
        row, k = weights[i], active[i]
        out[i] = row[k] * y + (row.sum() - row[k])
    return out


def single_path_nodes(
    nodes: BatchedNodes,
    inputs: list[Tensor],
    weights: Tensor,
    active: Sequence[int],
    free_ops: nn.ModuleDict,
    strides: dict[int, int],
) -> list[Tensor]:
    """The cell's states when edge ``i`` (``space.edges()`` order) runs only op ``active[i]``; ``weights``
    is ``[num_edges, num_ops]`` (hard one-hot rows for GDAS, 0/1 for a selected path), ``strides`` each
    source's stride."""
    states = list(inputs)
    outputs: dict[int, Tensor] = {}

    def expand(s: int) -> None:
        if s in nodes.out_edges:
            outputs.update(_source_edges(nodes, s, states[s], weights, active, free_ops, strides[s]))

    for s in range(len(inputs)):
        expand(s)
    for node in nodes.nodes:
        total: Tensor | None = None
        for src in range(node):
            y = outputs[nodes.out_edges[src][nodes.slot[(node, src)]]]
            total = y if total is None else total + y
        assert total is not None
        states.append(total)
        expand(node)
    return states
