"""Where each architecture choice sits: label -> group, cell type, stage, position and stride.

A choice is one probability label of a space: a cell edge ``cell3.edge2<-0`` / ``normal.edge5<-1`` or a
block slot ``block3.op`` / ``normal.op``. Parameter-freeness of an op depends on the stride it runs at, so
every per-choice statistic of the analysis starts here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pflnas.spaces.config import SpaceConfig
from pflnas.spaces.labels import edge_label


@dataclass(frozen=True)
class ChoiceSite:
    """One architecture choice of a space.

    ``stage``: for individual groups the cell's or block's :meth:`~pflnas.spaces.SpaceConfig.stage` (the
    reductions before or at it, as its space kind counts them); ``None`` for shared groups, which stand for
    cells/blocks in several stages.
    ``position``: the target node of a cell edge, the block index of a block (``None`` for a shared block
    group). ``node``/``source`` are ``None`` for blocks.
    """

    label: str
    group: str
    cell_type: str
    stride: int
    stage: int | None
    position: int | None
    node: int | None = None
    source: int | None = None


def choice_sites(space: SpaceConfig) -> dict[str, ChoiceSite]:
    """Every choice of ``space`` by label, in the space's order (groups, then edges by node and source)."""
    out: dict[str, ChoiceSite] = {}
    if space.is_block:
        sites = {s.name: s for s in space.sites()}
        for group, btype in space.alpha_groups():
            site = sites.get(group)  # None for shared groups (``normal`` / ``reduce``)
            label = f"{group}.{space.choice_keys()[0]}"
            out[label] = ChoiceSite(
                label,
                group,
                btype,
                space.type_stride(btype),
                site.stage if site is not None else None,
                site.index if site is not None else None,
            )
        return out
    for index, (group, ctype) in enumerate(space.alpha_groups()):
        stage = space.stage(index) if space.alpha_mode == "individual" else None
        for node, source in space.edges():
            label = edge_label(group, node, source)
            out[label] = ChoiceSite(
                label, group, ctype, space.edge_stride(ctype, source), stage, node, node, source
            )
    return out
