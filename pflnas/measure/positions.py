"""Where every architecture choice of a space runs its op in the network, and how often.

A choice (``cell3.edge4<-1``, ``normal.edge2<-0``, ``block5.op``) may run its op at several places (shared
alphas run an edge in every cell of the group), and a latency estimate must count each, weighted by how
much of it the derived network keeps, so that it is on the derived network's scale rather than the
supernet's. See :class:`Position` for the share.
"""

from __future__ import annotations

from dataclasses import dataclass

from pflnas.errors import ConfigError
from pflnas.spaces.config import SpaceConfig
from pflnas.spaces.labels import edge_label
from pflnas.spaces.skeletons import OpSite


@dataclass(frozen=True)
class Position:
    """One place a choice's op runs: its site and the share of one run the derived network keeps.

    ``site`` is one :class:`~pflnas.spaces.skeletons.OpSite` of ``space.op_sites(image_size)`` (stage and
    stride with channels, input grid and heads), found by its ``(stage, stride)``. ``share`` is 1 for NB201
    cells (every edge stays) and blocks; ``keep_edges / in_degree`` for a DARTS-cell edge into a node with
    ``in_degree`` incoming edges, of which the derived cell keeps ``keep_edges`` (2): the expected share
    under a uniform choice of the kept edges.
    """

    site: OpSite
    share: float = 1.0


def choice_positions(space: SpaceConfig, image_size: int) -> dict[str, list[Position]]:
    """``{choice label: [Position, ...]}`` for every choice of ``space`` at ``image_size`` inputs, in the
    supernet's label order (alpha groups, then ``space.choice_keys()``)."""
    sites = {(s.stage, s.stride): s for s in space.op_sites(image_size)}

    def site(stage: int, stride: int, where: str) -> OpSite:
        try:
            return sites[(stage, stride)]
        except KeyError:
            raise ConfigError(
                f"space {space.name!r}: {where} runs at stage {stage}, stride {stride}, which "
                "op_sites() does not list"
            ) from None

    out: dict[str, list[Position]] = {
        f"{g}.{k}": [] for g, _ in space.alpha_groups() for k in space.choice_keys()
    }
    if space.is_block:
        for block in space.sites():
            label = f"{space.group_of_block(block.index)}.{space.choice_keys()[0]}"
            out[label].append(Position(site(block.stage, block.stride, block.name)))
        return out
    keep = space.keep_edges
    for i, cell_type in enumerate(space.cell_types()):
        group = space.group_of_cell(i)
        for node, src in space.edges():
            share = 1.0 if keep is None else min(1.0, keep / node)  # node has ``node`` incoming edges
            stride = space.edge_stride(cell_type, src)
            out[edge_label(group, node, src)].append(
                Position(site(space.stage(i), stride, f"cell {i}"), share)
            )
    return out
