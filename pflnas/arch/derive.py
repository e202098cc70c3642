"""Turn per-edge op probabilities into a discrete architecture.

Block spaces: every block keeps its most probable candidate among those valid at its stride.
DARTS cells (``keep_edges=2``): each intermediate node keeps its 2 incoming edges with the largest best
non-``none`` probability (ties: the lower source), each carrying its argmax non-``none`` op (ties: the
op listed first in the space) -- the rule of DARTS' ``Network.genotype``. NB201 cells keep every edge
with its argmax op, ``none`` included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pflnas.arch.record import Architecture, BlockChoice, CellArch, Edge
from pflnas.errors import ArchitectureError
from pflnas.ops import get_op
from pflnas.spaces.config import SpaceConfig
from pflnas.spaces.labels import edge_label

Probabilities = Mapping[str, Mapping[str, float]]


def _argmax(ops: list[str], dist: Mapping[str, float]) -> str:
    best = ops[0]
    for op in ops[1:]:
        if dist[op] > dist[best]:
            best = op
    return best


def derive_cell(
    space: SpaceConfig,
    group: str,
    cell_type: str,
    probs: Probabilities,
    edge_scale: Mapping[str, float] | None = None,
) -> CellArch:
    real_ops = [op for op in space.ops if not get_op(op).is_zero]
    edges: list[Edge] = []
    for node in space.node_ids():
        dists = {}
        for src in range(node):
            label = edge_label(group, node, src)
            if label not in probs:
                raise ArchitectureError(f"probabilities lack edge {label!r}")
            dists[src] = probs[label]
        if space.keep_edges is None:
            edges += [Edge(node, src, _argmax(list(space.ops), d)) for src, d in dists.items()]
            continue
        scale = edge_scale or {}
        strength = {
            src: max(d[op] for op in real_ops) * scale.get(edge_label(group, node, src), 1.0)
            for src, d in dists.items()
        }
        kept = sorted(dists, key=lambda s: -strength[s])[: space.keep_edges]  # stable: ties keep lower source
        edges += [Edge(node, src, _argmax(real_ops, dists[src])) for src in kept]
    return CellArch(group, cell_type, tuple(edges), space.concat())


def derive_block(space: SpaceConfig, group: str, block_type: str, probs: Probabilities) -> BlockChoice:
    """A block keeps its most probable candidate (ties: the op listed first in the space)."""
    label = f"{group}.{space.choice_keys()[0]}"
    if label not in probs:
        raise ArchitectureError(f"probabilities lack block {label!r}")
    return BlockChoice(group, block_type, _argmax(list(space.group_ops(group)), probs[label]))


def derive_architecture(
    space: SpaceConfig,
    probs: Probabilities,
    provenance: dict[str, Any] | None = None,
    edge_scale: Mapping[str, float] | None = None,
) -> Architecture:
    """The discrete architecture that ``probs`` (``{label: {op: p}}``) selects in ``space``.

    ``edge_scale`` (PC-DARTS edge normalisation, ``{edge label: weight}``) multiplies each edge's strength
    when a DARTS node picks its strongest incoming edges; op choices are unaffected.
    """
    clean = {k: {op: round(float(p), 6) for op, p in v.items()} for k, v in probs.items()}
    if space.is_block:
        blocks = tuple(derive_block(space, g, t, probs) for g, t in space.alpha_groups())
        return Architecture(space, (), clean, dict(provenance or {}), blocks)
    cells = tuple(derive_cell(space, g, t, probs, edge_scale) for g, t in space.alpha_groups())
    return Architecture(space, cells, clean, dict(provenance or {}))
