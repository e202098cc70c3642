"""Exhaustive ground truth on parameter-free ops: for every edge and every context of the other five edges,
does the best parameter-free op beat the best trainable op at that edge? And which ops sit on the
accuracy-vs-parameters Pareto front of all 15,625 cells?

A search's "win" is an argmax of architecture weights; these are wins in trained accuracy, read off the
table for every one of the 6 x 3,125 (edge, context) pairs. Parameter-freeness comes from the op registry
(``param_free`` at the edge's stride), so another op set needs no change here.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pflnas.bench.nb201 import (
    EDGES,
    NUM_CELLS,
    OPS,
    NB201Table,
    decode_index,
    encode_index,
    nb201_string,
)
from pflnas.ops import PARAM_FREE, TRAINABLE, get_op
from pflnas.spaces.labels import edge_key

DISCONNECTED = 10.5  # a context whose four compared cells all score at most this is cut off (chance: 10%)


@dataclass(frozen=True)
class OpGroups:
    """Op indices (the table's key order) by kind at stride 1, the stride of every NB201 edge."""

    param_free: tuple[int, ...]
    trainable: tuple[int, ...]
    zero: tuple[int, ...]

    def names(self, which: tuple[int, ...]) -> list[str]:
        return [OPS[i] for i in which]


def op_groups() -> OpGroups:
    specs = [get_op(op) for op in OPS]
    return OpGroups(
        param_free=tuple(i for i, s in enumerate(specs) if s.role(1) == PARAM_FREE),
        trainable=tuple(i for i, s in enumerate(specs) if s.role(1) == TRAINABLE),
        zero=tuple(i for i, s in enumerate(specs) if s.is_zero),
    )


def edge_label(position: int) -> str:
    """The pflnas edge label of a key position, e.g. ``edge1<-0``."""
    return edge_key(*EDGES[position])


def op_wins(table: NB201Table, threshold: float = DISCONNECTED) -> dict[str, dict[str, Any]]:
    """Per edge: ``win_fraction`` (contexts where the best parameter-free op is strictly better),
    ``mean_delta_pp`` (mean best parameter-free minus best trainable, percentage points) and ``contexts``
    (those kept: not every compared cell at or below ``threshold``)."""
    groups = op_groups()
    grid = table.acc.reshape((len(OPS),) * len(EDGES))
    out = {}
    for position in range(len(EDGES)):
        at_edge = np.moveaxis(grid, position, -1).reshape(-1, len(OPS))  # one row per context
        pf = at_edge[:, list(groups.param_free)].max(axis=1)
        tr = at_edge[:, list(groups.trainable)].max(axis=1)
        compared = at_edge[:, list(groups.param_free + groups.trainable)]
        keep = ~(compared <= threshold).all(axis=1)
        delta = (pf - tr)[keep]
        n = int(keep.sum())
        out[edge_label(position)] = {
            "win_fraction": int((delta > 0).sum()) / n if n else math.nan,
            "mean_delta_pp": math.fsum(delta.tolist()) / n if n else math.nan,
            "contexts": n,
        }
    return out


# --- parameters and the Pareto front ----------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def edge_op_params(table: NB201Table) -> tuple[int, np.ndarray]:
    """(params of the all-``none`` network, [edge, op] parameters each op adds at each position), from
    pflnas' NB201 builder at the NB201 protocol size (C=16, 5 cells per stage, 10 classes).

    One build per (edge, op) instead of one per cell: a cell's count is the all-``none`` network plus the
    sum over its edges (verified against real builds in tests/test_bench_op_wins.py).
    """
    none = OPS.index(next(op for op in OPS if get_op(op).is_zero))
    base = network_params(table, (none,) * len(EDGES))
    extra = np.zeros((len(EDGES), len(OPS)), dtype=np.int64)
    for position in range(len(EDGES)):
        for op in range(len(OPS)):
            code = tuple(op if i == position else none for i in range(len(EDGES)))
            extra[position, op] = network_params(table, code) - base
    return base, extra


def network_params(table: NB201Table, code: tuple[int, ...]) -> int:
    """Parameters of the derived network of one cell, built for real."""
    from pflnas.measure.counting import count_parameters
    from pflnas.models import build_network

    return count_parameters(build_network(table.architecture(code), dataset="cifar10"))


def cell_params(table: NB201Table) -> np.ndarray:
    """Parameters of every cell's network, in the table's index order."""
    base, extra = edge_op_params(table)
    grid = np.full((len(OPS),) * len(EDGES), base, dtype=np.int64)
    for position in range(len(EDGES)):
        shape = [1] * len(EDGES)
        shape[position] = len(OPS)
        grid = grid + extra[position].reshape(shape)
    return grid.reshape(NUM_CELLS)


def cell_shares() -> np.ndarray:
    """Parameter-free share of every cell's non-``none`` edges (NaN when all are ``none``)."""
    groups = op_groups()
    codes = np.indices((len(OPS),) * len(EDGES)).reshape(len(EDGES), NUM_CELLS)
    pf = np.isin(codes, groups.param_free).sum(axis=0)
    counted = (~np.isin(codes, groups.zero)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counted > 0, pf / np.maximum(counted, 1), np.nan)


def _share_of(shares: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    picked = shares[mask]
    kept = picked[~np.isnan(picked)]
    return {"cells": int(mask.sum()), "param_free_share": float(kept.mean()) if len(kept) else None}


@dataclass(frozen=True)
class ParetoData:
    """Per cell (table index order): network parameters, Pareto-front membership, parameter-free share."""

    params: np.ndarray
    front: np.ndarray
    shares: np.ndarray


def pareto_data(table: NB201Table) -> ParetoData:
    """The accuracy-vs-parameters front of all cells (:func:`pflnas.analysis.stats.pareto_mask`)."""
    import pandas as pd

    from pflnas.analysis.stats import pareto_mask

    params = cell_params(table)
    frame = pd.DataFrame({"params": params, "accuracy": table.acc})
    front = pareto_mask(frame, "params", "accuracy").to_numpy()
    return ParetoData(params, front, cell_shares())


def pareto_summary(table: NB201Table, data: ParetoData, chance: float) -> dict[str, Any]:
    """The front's size and parameter-free share, and for comparison the share among the best 1% by
    accuracy and over the whole table, each beside the chance rate."""
    top = np.zeros(NUM_CELLS, dtype=bool)
    top[[encode_index(c) for c in table.top_codes(0.01)]] = True
    order = np.flatnonzero(data.front)[np.argsort(data.params[data.front], kind="stable")]
    return {
        "front": {**_share_of(data.shares, data.front), "chance": chance},
        "top_1pct": {**_share_of(data.shares, top), "chance": chance},
        "all_cells": {**_share_of(data.shares, np.ones(NUM_CELLS, dtype=bool)), "chance": chance},
        "params_range": [int(data.params.min()), int(data.params.max())],
        "front_cells": [_front_cell(table, int(i), int(data.params[i]), data.shares[i]) for i in order],
    }


def _front_cell(table: NB201Table, index: int, params: int, share: float) -> dict[str, Any]:
    code = decode_index(index)
    return {
        "cell": nb201_string(table.architecture(code)),
        "code": list(code),
        "params": params,
        "accuracy": float(table.acc[index]),
        "param_free_share": None if math.isnan(share) else float(share),
    }
