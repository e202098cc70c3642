"""Homogeneous architectures: every choice of a space uses one op (the paper's layer-level study).

Cell spaces: DARTS cells keep, for every intermediate node, the edges from its two predecessors (node ``n``
reads ``n-1`` and ``n-2``: a chain through the cell, inputs included) and NAS-Bench-201 cells keep every
edge; every kept edge carries the op. Block spaces: every block uses the op, and downsampling blocks use
``reduce_op`` when the op cannot stride (``identity``) or when one is given explicitly.
"""

from __future__ import annotations

from typing import Any

from pflnas.arch.record import Architecture, BlockChoice, CellArch, Edge
from pflnas.errors import ConfigError
from pflnas.names import name_hint
from pflnas.ops import get_op
from pflnas.spaces.config import SpaceConfig


def _check(space: SpaceConfig, op: str, what: str) -> None:
    if op not in space.ops:
        raise ConfigError(
            f"{what} {op!r}{name_hint(op, space.ops)} is not a candidate of space {space.name!r} "
            f"({', '.join(space.ops)})"
        )
    if get_op(op).is_zero:
        raise ConfigError(f"{what} {op!r} has no connection; pick an op that computes something")


def homogeneous_architecture(
    space: SpaceConfig, op: str, reduce_op: str | None = None, provenance: dict[str, Any] | None = None
) -> Architecture:
    """The architecture of ``space`` in which every kept edge (or every block) uses ``op``."""
    _check(space, op, "op")
    if reduce_op is not None:
        _check(space, reduce_op, "reduce op")
    meta = {"source": "homogeneous", "op": op, **({"reduce_op": reduce_op} if reduce_op else {})}
    meta.update(provenance or {})
    if space.is_block:
        blocks = []
        for group, btype in space.alpha_groups():
            chosen = reduce_op if btype == "reduce" and reduce_op else op
            if chosen not in space.group_ops(group):
                raise ConfigError(
                    f"op {chosen!r} cannot be placed at the stride-{space.type_stride(btype)} blocks of "
                    f"{space.name!r}; give --reduce-op (one of {', '.join(space.group_ops(group))})"
                )
            blocks.append(BlockChoice(group, btype, chosen))
        return Architecture(space, (), {}, meta, tuple(blocks))
    cells = []
    for group, ctype in space.alpha_groups():
        chosen = reduce_op if ctype == "reduce" and reduce_op else op
        if space.keep_edges is None:
            edges = tuple(Edge(n, s, chosen) for n, s in space.edges())
        else:
            edges = tuple(Edge(n, s, chosen) for n in space.node_ids() for s in (n - 1, n - 2))
        cells.append(CellArch(group, ctype, edges, space.concat()))
    return Architecture(space, tuple(cells), {}, meta)
