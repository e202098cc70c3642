"""Counterfactual architectures: a found architecture with one choice flipped between op families.

A parameter-free "win" in a found.json is an argmax of α, not an accuracy. Retraining the found network
beside counterfactuals that differ in one choice tests the pick by accuracy. Parameter-freeness comes from
the op registry at the choice's stride (a stride-2 ``skip_connect`` is a FactorizedReduce: trainable).
The replacement op is chosen without looking at accuracy (:func:`best_replacement`), so the study cannot
pick its own answer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pflnas.arch.record import Architecture, BlockChoice, CellArch, Edge
from pflnas.arch.sites import ChoiceSite, choice_sites
from pflnas.errors import ConfigError
from pflnas.ops import PARAM_FREE, get_op

SWAP_KINDS = ("all", "param_free", "trainable")  # which picks to flip: every one, or one family's


@dataclass(frozen=True)
class Swap:
    """One counterfactual: choice ``label`` (a probability label) runs ``new_op`` instead of ``old_op``."""

    label: str
    group: str
    stride: int
    old_op: str
    new_op: str
    param_free_pick: bool  # the found op is parameter-free at ``stride`` (so ``new_op`` is trainable)
    rule: str  # "probabilities" or "op order": how ``new_op`` was chosen
    node: int | None = None  # cell edges only
    source: int | None = None
    p_old: float | None = None  # final probabilities of both ops in the record (None without them)
    p_new: float | None = None

    @property
    def name(self) -> str:
        """A file-name-safe id: ``cell3.e4_1.conv_3x3`` (edge 4<-1 of cell3), ``block5.identity``."""
        where = self.group if self.node is None else f"{self.group}.e{self.node}_{self.source}"
        return f"{where}.{self.new_op}"

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _choice_candidates(arch: Architecture, site: ChoiceSite, param_free: bool) -> list[str]:
    """The ops of the given family that can run at the choice's place, in the space's op order."""
    return [
        op
        for op in arch.space.ops_at(site.stride)
        if not get_op(op).is_zero and (get_op(op).role(site.stride) == PARAM_FREE) == param_free
    ]


def best_replacement(arch: Architecture, site: ChoiceSite, old_op: str) -> tuple[str, str] | None:
    """(op, rule) replacing ``old_op`` at ``site``; None when the other family has no candidate there
    (or ``old_op`` is ``none``).

    Rule (never the accuracy the study reports): among the candidates of the choice that can run at its
    stride and belong to the other family, the one with the highest final probability in the record's
    ``probabilities``; ties, and records without probabilities for that choice, fall back to the space's
    op order. ``none`` belongs to neither family and is never picked or replaced.
    """
    if get_op(old_op).is_zero:
        return None
    candidates = _choice_candidates(arch, site, get_op(old_op).role(site.stride) != PARAM_FREE)
    if not candidates:
        return None
    probs = arch.probabilities.get(site.label, {})
    if not any(op in probs for op in candidates):
        return candidates[0], "op order"
    order = {op: i for i, op in enumerate(candidates)}
    return max(candidates, key=lambda op: (probs.get(op, -1.0), -order[op])), "probabilities"


def possible_swaps(arch: Architecture) -> list[Swap]:
    """Every single-choice counterfactual of ``arch``, in network order (cells, then edges by node)."""
    sites = choice_sites(arch.space)
    picks: list[tuple[ChoiceSite, str]] = []
    if arch.space.is_block:
        picks = [(sites[f"{b.name}.{arch.space.choice_keys()[0]}"], b.op) for b in arch.blocks]
    else:
        by_edge = {(s.group, s.node, s.source): s for s in sites.values()}
        for cell in arch.cells:
            for e in sorted(cell.edges, key=lambda e: (e.node, e.source)):
                picks.append((by_edge[(cell.name, e.node, e.source)], e.op))
    out = []
    for site, op in picks:
        found = best_replacement(arch, site, op)
        if found is None:
            continue
        new_op, rule = found
        pf = get_op(op).role(site.stride) == PARAM_FREE
        probs = arch.probabilities.get(site.label, {})
        where = (site.node, site.source, probs.get(op), probs.get(new_op))
        out.append(Swap(site.label, site.group, site.stride, op, new_op, pf, rule, *where))
    return out


def _spread(items: list[Swap], k: int) -> list[Swap]:
    """``k`` items evenly spaced over ``items`` (the middle one for ``k == 1``), in order."""
    n = len(items)
    return [items[(2 * i + 1) * n // (2 * k)] for i in range(k)] if k < n else list(items)


def select_swaps(swaps: list[Swap], kind: str = "all", max_swaps: int | None = None) -> list[Swap]:
    """The swaps a study makes, deterministically: those of ``kind`` (a family of picks, or all), at most
    ``max_swaps`` of them evenly spaced in network order; with ``all`` the parameter-free picks get half of
    the cap (rounded up) and either family's unused share goes to the other."""
    if kind not in SWAP_KINDS:
        raise ConfigError(f"swaps must be one of {', '.join(SWAP_KINDS)}, got {kind!r}")
    pool = [s for s in swaps if kind == "all" or s.param_free_pick == (kind == "param_free")]
    if max_swaps is None or len(pool) <= max_swaps:
        return pool
    if kind != "all":
        return _spread(pool, max_swaps)
    free = [s for s in pool if s.param_free_pick]
    trainable = [s for s in pool if not s.param_free_pick]
    n_free = min(len(free), max(max_swaps - len(trainable), -(-max_swaps // 2)))
    chosen = set(_spread(free, n_free)) | set(_spread(trainable, max_swaps - n_free))
    return [s for s in pool if s in chosen]


def apply_swap(arch: Architecture, swap: Swap) -> Architecture:
    """``arch`` with ``swap`` made; the record's provenance says what was swapped and keeps the original's.

    The counterfactual carries no probabilities: they were the search's, for the original pick."""
    provenance = {"source": "counterfactual", "swap": swap.record(), "original": arch.provenance}
    if arch.space.is_block:
        blocks = tuple(
            BlockChoice(b.name, b.type, swap.new_op) if b.name == swap.group else b for b in arch.blocks
        )
        return Architecture(arch.space, (), {}, provenance, blocks)
    cells = []
    for c in arch.cells:
        edges = tuple(
            Edge(e.node, e.source, swap.new_op)
            if (c.name, e.node, e.source) == (swap.group, swap.node, swap.source)
            else e
            for e in c.edges
        )
        cells.append(CellArch(c.name, c.type, edges, c.concat))
    return Architecture(arch.space, tuple(cells), {}, provenance)
