"""The batched layout: the candidates of all edges leaving a source node run as a few wide ops.

Every edge leaving a source node reads the same tensor, so each trainable op kind runs once for all of them
(:mod:`pflnas.supernet.wide`) and each parameter-free op once, as in ``per_source``. A cell's inputs of the
same shape are stacked on the channel axis and share one fan (grouped convs, ``groups`` = the number of
inputs), so every wide op runs once for both DARTS inputs. All the fan's candidates end in affine-free,
per-channel BatchNorms (a pooling op's when ``space.pool_bn``), so one BatchNorm over their concatenation
computes exactly what the separate ones compute. The mixing of the fan's edges is then one batched matrix
product over C-channel blocks: ``[edges, blocks]`` weights, zero where a block is not the edge's (an exact
zero adds nothing to a finite value; a non-finite output makes the loss non-finite in every layout), gathered
for the whole cell at once: more multiply-adds than separate products, in one kernel and one pass over
memory. Each edge keeps its own weights and statistics (slices of the wide ones), so the layout computes
exactly what the per-edge layout computes; :mod:`pflnas.supernet.layouts` converts the parameters.

Wide tensors are source-major, then edge-major: channels ``[j*C, (j+1)*C)`` belong to the j-th edge of the
fan (its sources' edges in ``space.edges()`` order, one source after the other).

PC-DARTS' partial channels batch too: every edge leaving a node sees the same first C/K channels, so the fan
runs on them once, and the untouched channels, which every such edge passes through alike, are pooled and
shuffled in once for all the node's edges (:func:`reassemble`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pflnas.supernet.mixed import candidate, split_ops
from pflnas.supernet.wide import affine_free, widen

# Checkpoints record it: 3 since a fan stacks the cell's inputs and has one BatchNorm (its candidates' final
# ones, pooling BNs included), 2 had a fan per source and a BatchNorm per op, 1 interleaved depthwise weights.
BATCHED_FORMAT = 3


def _cat(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


class SourceFan(nn.Module):
    """Every candidate of the ``edges`` edges leaving ``g`` stacked sources (``edges // g`` each).

    ``columns``: the C-channel blocks that ``forward`` mixes, in order, as ``(op, edge, source)``: a wide
    op's block per edge, then a parameter-free op's per source (``edge`` None). ``bn_parts``: the per-edge
    (True) or per-source (False) BatchNorms that :attr:`bn` joins, as ``(op, suffix in its module, per
    edge)``: the wide ops' final ones, then the pooling ops' (a ``candidate`` pool with BN is
    ``Sequential(pool, BN)``)."""

    def __init__(self, ops: Sequence[str], channels: int, stride: int, pool_bn: bool, edges: int, g: int = 1):
        super().__init__()
        self.edges, self.g = edges, g
        m = edges // g
        trainable, free = split_ops(ops, stride)
        self.wide = nn.ModuleDict(
            {n: widen(n, candidate(n, channels, stride, pool_bn), edges, g) for n in trainable}
        )
        self.free = nn.ModuleDict()  # parameter-free, stateless: their BatchNorms (if any) join self.bn
        self.bn_free: list[str] = []
        self.raw: list[str] = []  # parameter-free ops without a BatchNorm (identity, pools without pool_bn)
        for n in free:
            module = candidate(n, channels, stride, pool_bn)
            if isinstance(module, nn.Sequential) and isinstance(module[-1], nn.BatchNorm2d):
                affine_free(module[-1])
                self.bn_free.append(n)
                module = module[0]
            else:
                self.raw.append(n)
            self.free[n] = module
        self.bn_parts = [(n, w.final_bn, True) for n, w in self.wide.items()]
        self.bn_parts += [(n, "1", False) for n in self.bn_free]
        blocks = edges * len(self.wide) + g * len(self.bn_free)
        self.bn = nn.BatchNorm2d(blocks * channels, affine=False) if blocks else None
        self.columns: list[tuple[str, int | None, int]] = [
            (n, e, e // m) for n in self.wide for e in range(edges)
        ]
        self.columns += [(n, None, s) for n in [*self.bn_free, *self.raw] for s in range(g)]
        if not self.columns:
            raise ValueError("a mixed edge needs at least one op other than 'none'")

    def forward(self, x: Tensor, mix: Tensor) -> Tensor:
        """``x``: the stacked sources ``[B, g·C, H, W]``; ``mix``: ``[edges, len(columns)]`` weights.
        Returns ``[B, edges, C, H', W']``, each edge's weighted sum over its candidates."""
        pre = []
        if self.wide:
            r = torch.relu(x)  # every cell candidate starts with ReLU: once for all kinds and edges
            pre = [op(r) for op in self.wide.values()]
        pre += [self.free[n](x) for n in self.bn_free]
        blocks = [] if self.bn is None else [self.bn(_cat(pre))]
        z = _cat(blocks + [self.free[n](x) for n in self.raw])
        b, _, h, w = z.shape
        # one product per sample: [edges, blocks] @ [blocks, C*H*W] (reshape: channels_last copies)
        y = torch.bmm(mix.expand(b, *mix.shape), z.reshape(b, mix.shape[1], -1))
        return y.view(b, self.edges, -1, h, w)


def reassemble(x: Tensor, mixed: Tensor, partial: int, stride: int) -> Tensor:
    """PC-DARTS' channel reassembly (``MixedEdge`` does it per edge) of all ``m`` edges leaving ``x`` at once.

    ``mixed``: ``[B, m, C/K, H, W]`` from :class:`SourceFan`; the bypassed channels ``x[:, C/K:]`` (max-pooled
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


def fan_groups(
    out_edges: dict[int, list[int]], strides: dict[int, int], nodes: Sequence[int]
) -> list[tuple[int, ...]]:
    """The sources of each fan: a cell's inputs (all there before any node runs) stacked when they have the
    same stride and number of edges; every intermediate node alone."""
    stacks: dict[tuple[int, int], list[int]] = {}
    for s in sorted(out_edges):
        if s not in nodes:
            stacks.setdefault((strides[s], len(out_edges[s])), []).append(s)
    return [tuple(g) for g in stacks.values()] + [(s,) for s in sorted(out_edges) if s in nodes]


class BatchedNodes(nn.Module):
    """The DAG of one cell in the batched layout: a :class:`SourceFan` per group of sources
    (:func:`fan_groups`). Every node sums its incoming edges' slices of the fans' mixes. ``partial`` > 1:
    PC-DARTS' partial channels (the ops see ``channels // partial``)."""

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
        self.in_edges = {n: [i for i, (dst, _) in enumerate(edges) if dst == n] for n in self.nodes}
        self.fans = nn.ModuleDict()
        self.fan_sources: dict[str, tuple[int, ...]] = {}
        self.fan_edges: dict[str, list[int]] = {}
        self.slot: dict[int, tuple[str, int]] = {}  # edge index -> (fan, position among its edges)
        for group in fan_groups(self.out_edges, strides, nodes):
            name = "_".join(map(str, group))
            self.fan_sources[name] = group
            self.fan_edges[name] = [i for s in group for i in self.out_edges[s]]
            self.slot.update({i: (name, pos) for pos, i in enumerate(self.fan_edges[name])})
            m = len(self.fan_edges[name])
            self.fans[name] = SourceFan(ops, channels // partial, strides[group[0]], pool_bn, m, len(group))
        gather, self.sizes = self._gather(len(edges))
        self.register_buffer("gather", gather, persistent=False)

    def _gather(self, num_edges: int) -> tuple[Tensor, list[int]]:
        """Where each fan's mixing weights are in the cell's flattened ``[edges, ops]`` weights followed by
        one zero (index ``num_edges * num_ops``), fan after fan, and how many each fan takes."""
        zero, index, sizes = num_edges * len(self.ops), [], []
        for name, fan in self.fans.items():
            m = fan.edges // fan.g
            for pos, i in enumerate(self.fan_edges[name]):
                for op, edge, src in fan.columns:
                    mine = pos == edge if edge is not None else pos // m == src
                    index.append(i * len(self.ops) + self.ops.index(op) if mine else zero)
            sizes.append(fan.edges * len(fan.columns))
        return torch.tensor(index, dtype=torch.long), sizes

    def forward(self, inputs: list[Tensor], weights: Tensor) -> list[Tensor]:
        """``weights``: ``[num_edges, num_ops]`` in ``space.edges()`` order; returns every node's state."""
        states = list(inputs)
        flat = torch.cat([weights.reshape(-1), weights.new_zeros(1)])
        mixes = dict(zip(self.fans, flat.index_select(0, self.gather).split(self.sizes)))
        outs: dict[str, tuple[Tensor, ...]] = {}  # per fan: its edges' outputs, in fan order
        for name, group in self.fan_sources.items():
            if max(group) < len(inputs):
                outs[name] = self.fan_mix(name, states, mixes[name])
        for node in self.nodes:
            total: Tensor | None = None
            for i in self.in_edges[node]:
                fan, pos = self.slot[i]
                total = outs[fan][pos] if total is None else total + outs[fan][pos]
            assert total is not None
            states.append(total)
            if str(node) in self.fans:
                outs[str(node)] = self.fan_mix(str(node), states, mixes[str(node)])
        return states

    def fan_mix(self, name: str, states: list[Tensor], mix: Tensor) -> tuple[Tensor, ...]:
        """The mixes of every edge of fan ``name``; with partial channels the fan runs on each source's first
        ``C/partial`` channels and :func:`reassemble` adds the rest."""
        fan, xs = self.fans[name], [states[s] for s in self.fan_sources[name]]
        mix = mix.view(fan.edges, -1)
        if self.partial == 1:
            return fan(_cat(xs), mix).unbind(1)  # one op (its backward one stack), not a select per edge
        y = fan(_cat([x[:, : x.shape[1] // self.partial] for x in xs]), mix)
        m, stride = fan.edges // fan.g, self.strides[self.fan_sources[name][0]]
        return tuple(
            e
            for j, x in enumerate(xs)
            for e in reassemble(x, y[:, j * m : (j + 1) * m], self.partial, stride).unbind(1)
        )
