"""Collapse diagnostics: is a search drifting to a degenerate, skip-dominated architecture?

Pure functions of the op probabilities ``{label: {op: p}}`` and the architecture derived from them, so the
search loop can write them live into ``metrics.jsonl`` (:func:`collapse_diagnostics` returns exactly the
record fields) and the analysis can recompute them for runs that predate those fields. The default
thresholds live in :class:`CollapseThresholds` and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scipy.stats import entropy

from pflnas.arch.record import Architecture
from pflnas.arch.sites import choice_sites, op_is_param_free
from pflnas.spaces.config import SpaceConfig

Probabilities = Mapping[str, Mapping[str, float]]
SKIP_OPS = frozenset({"skip_connect", "identity"})


@dataclass(frozen=True)
class CollapseThresholds:
    """When a search counts as collapsed; any one reason flags it.

    * ``max_skip_per_cell``: a derived cell keeping more skip ops (``skip_connect``/``identity``, any
      stride) than this (P-DARTS caps normal cells at 2).
    * ``max_skip_share``: block spaces (no cells): share of blocks choosing a skip op above this.
    * ``max_skip_mass``: mean probability of the skip ops over all choices above this.
    * ``min_entropy``: mean *normalised* entropy (entropy / log #candidates, in [0, 1]) below this: the
      weights have saturated to one-hot, so later epochs cannot change the architecture.
    """

    max_skip_per_cell: int = 2
    max_skip_share: float = 0.5
    max_skip_mass: float = 0.5
    min_entropy: float = 0.05


DEFAULT_THRESHOLDS = CollapseThresholds()


def thresholds_from(config: Any) -> CollapseThresholds:
    """The thresholds of a config section with the same fields (the search config's ``collapse``)."""
    return CollapseThresholds(
        max_skip_per_cell=config.max_skip_per_cell,
        max_skip_share=config.max_skip_share,
        max_skip_mass=config.max_skip_mass,
        min_entropy=config.min_entropy,
    )


def edge_entropy(probs: Probabilities) -> dict[str, float]:
    """Entropy (nats) of every choice's op distribution."""
    return {label: float(entropy(list(dist.values()))) for label, dist in probs.items()}


def normalized_entropy(probs: Probabilities) -> float:
    """Mean over choices with >= 2 candidates of entropy / log(#candidates); NaN when there is none."""
    values = [float(entropy(list(d.values()))) / math.log(len(d)) for d in probs.values() if len(d) > 1]
    return sum(values) / len(values) if values else math.nan


def param_free_mass(probs: Probabilities, space: SpaceConfig) -> float:
    """Mean over choices of the summed probability of the ops parameter-free at that choice's stride.

    ``none`` is not parameter-free (its mass counts for neither side). Labels unknown to ``space`` are
    ignored; NaN when no label is known.
    """
    sites = choice_sites(space)
    masses = [
        sum(p for op, p in dist.items() if op_is_param_free(op, sites[label].stride))
        for label, dist in probs.items()
        if label in sites
    ]
    return sum(masses) / len(masses) if masses else math.nan


def skip_mass(probs: Probabilities) -> float:
    """Mean over choices of the probability of the skip ops; NaN for no choices."""
    masses = [sum(p for op, p in dist.items() if op in SKIP_OPS) for dist in probs.values()]
    return sum(masses) / len(masses) if masses else math.nan


def skip_count(arch: Architecture) -> int:
    """Number of kept edges / blocks whose op is ``skip_connect`` or ``identity`` (any stride)."""
    return sum(d.op in SKIP_OPS for d in arch.decisions())


def collapse_flags(
    probs: Probabilities, arch: Architecture | None, thresholds: CollapseThresholds = DEFAULT_THRESHOLDS
) -> list[str]:
    """Reasons (one line each, prefixed ``skip_count:``, ``skip_share:``, ``skip_mass:`` or
    ``low_entropy:``) why these probabilities / this derived architecture look collapsed; ``[]`` if none.

    ``arch`` is the architecture derived from ``probs``; without it only the probability criteria apply.
    """
    reasons: list[str] = []
    t = thresholds
    if arch is not None and arch.space.is_block:
        blocks = arch.decisions()
        share = sum(d.op in SKIP_OPS for d in blocks) / len(blocks) if blocks else 0.0
        if share > t.max_skip_share:
            reasons.append(f"skip_share: {share:.2f} of blocks choose a skip op (max {t.max_skip_share})")
    elif arch is not None:
        for cell in arch.cells:
            n = sum(e.op in SKIP_OPS for e in cell.edges)
            if n > t.max_skip_per_cell:
                reasons.append(f"skip_count: {cell.name} keeps {n} skip ops (max {t.max_skip_per_cell})")
    mass = skip_mass(probs)
    if mass > t.max_skip_mass:
        reasons.append(f"skip_mass: mean skip probability {mass:.2f} (max {t.max_skip_mass})")
    ent = normalized_entropy(probs)
    if ent < t.min_entropy:
        reasons.append(f"low_entropy: mean normalised entropy {ent:.3f} (min {t.min_entropy})")
    return reasons


def collapse_diagnostics(
    probs: Probabilities, arch: Architecture, thresholds: CollapseThresholds = DEFAULT_THRESHOLDS
) -> dict[str, Any]:
    """The live ``metrics.jsonl`` fields of one epoch, ``arch`` being the architecture derived from
    ``probs``: ``edge_entropy``, ``param_free_mass``, ``skip_count``, ``collapse`` ``{"flagged", "reasons"}``.
    """
    reasons = collapse_flags(probs, arch, thresholds)
    mass = param_free_mass(probs, arch.space)
    return {
        "edge_entropy": edge_entropy(probs),
        "param_free_mass": None if math.isnan(mass) else mass,
        "skip_count": skip_count(arch),
        "collapse": {"flagged": bool(reasons), "reasons": reasons},
    }
