"""Which record cell each cell of a derived network reads.

A derived network may be deeper than the search network, so shared records (``normal``/``reduce``,
``cell``) give every cell the record cell of its type, and individual records (``cell0`` ... one per
search cell) are mapped stage by stage (:func:`stage_map`): a deeper network repeats each searched cell in
place, and a network as deep as the search network reads the cells one to one.
"""

from __future__ import annotations

from collections.abc import Sequence

from pflnas.arch.record import Architecture, CellArch
from pflnas.errors import ArchitectureError


def _split(types: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Positions of the normal cells per stage, and of the reduction cells."""
    stages: list[list[int]] = [[]]
    reductions: list[int] = []
    for i, t in enumerate(types):
        if t == "reduce":
            reductions.append(i)
            stages.append([])
        else:
            stages[-1].append(i)
    return stages, reductions


def stage_map(search_types: Sequence[str], network_types: Sequence[str]) -> list[int]:
    """For each network position, the search position it copies.

    A stage is the run of normal cells between reductions. The k-th reduction cell of the network reads
    the k-th reduction cell of the search network; the normal cell at position ``j`` of the ``n`` normal
    cells of a network stage reads the search normal cell at position ``floor(j * m / n)`` of the ``m``
    search normal cells of the same stage (``m=2, n=6`` gives ``0 0 0 1 1 1``).
    """
    s_stages, s_red = _split(search_types)
    n_stages, n_red = _split(network_types)
    if len(s_red) != len(n_red):
        raise ArchitectureError(
            f"the network has {len(n_red)} reduction cells but the search network had {len(s_red)}"
        )
    out = [0] * len(network_types)
    for net_pos, search_pos in zip(n_red, s_red, strict=True):
        out[net_pos] = search_pos
    for stage, (net, search) in enumerate(zip(n_stages, s_stages, strict=True)):
        if net and not search:
            raise ArchitectureError(
                f"stage {stage} of the search network has no normal cell to copy into the {len(net)} normal "
                f"cells of that stage; use a shared record or a network without normal cells there"
            )
        for j, pos in enumerate(net):
            out[pos] = search[j * len(search) // len(net)]
    return out


def darts_network_cells(arch: Architecture, layers: int) -> list[CellArch]:
    """The record cell of each of the ``layers`` cells of a DARTS-cell network."""
    space = arch.space
    net_types = space.cell_types(layers)
    if space.alpha_mode == "shared":
        return [arch.cell(t) for t in net_types]
    return [arch.cell(space.group_of_cell(i)) for i in stage_map(space.cell_types(), net_types)]


def _nb201_layout(per_stage: int) -> list[str]:
    """Three stages of ``per_stage`` cells with the fixed residual reduction blocks between them."""
    return (["normal"] * per_stage + ["reduce"]) * 2 + ["normal"] * per_stage


def nb201_network_cells(arch: Architecture, per_stage: int) -> list[CellArch]:
    """The record cell of each of the ``3 * per_stage`` searchable cells of an NB201 network, in order."""
    space = arch.space
    if space.alpha_mode == "shared":
        return [arch.cell("cell")] * (3 * per_stage)
    search = _nb201_layout(space.layers)
    # search layout position -> index among the searchable (record) cells
    record_index = {pos: k for k, pos in enumerate(p for p, t in enumerate(search) if t == "normal")}
    net = _nb201_layout(per_stage)
    copied = stage_map(search, net)
    return [
        arch.cell(space.group_of_cell(record_index[copied[p]])) for p, t in enumerate(net) if t == "normal"
    ]
