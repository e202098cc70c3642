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
from pflnas.arch.sites import choice_sites
from pflnas.ops import PARAM_FREE, get_op
from pflnas.spaces.config import SpaceConfig

Probabilities = Mapping[str, Mapping[str, float]]
SKIP_OPS = frozenset({"skip_connect", "identity"})


@dataclass(frozen=True)
class CollapseThresholds:
    """When a search counts as collapsed; any one reason flags it.

    A *skip* is a parameter-free skip: ``skip_connect``/``identity`` where it is the identity (stride 1).
    DARTS' stride-2 ``skip_connect`` is a FactorizedReduce with weights, so it never counts.

    * ``max_skip_per_cell``: a derived *normal* cell keeping more skips than this (P-DARTS caps normal
      cells at 2; reduction cells have no such cap, their skips are reported separately).
    * ``max_skip_share``: block spaces (no cells): share of blocks choosing a skip above this.
    * ``max_skip_mass``: mean probability of the skips over all choices above this.
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
        sum(p for op, p in dist.items() if get_op(op).role(sites[label].stride) == PARAM_FREE)
        for label, dist in probs.items()
        if label in sites
    ]
    return sum(masses) / len(masses) if masses else math.nan


def is_skip(op: str, stride: int) -> bool:
    """A parameter-free skip: a skip op at a stride where it has no weights (the identity)."""
    return op in SKIP_OPS and get_op(op).role(stride) == PARAM_FREE


def skip_mass(probs: Probabilities, space: SpaceConfig | None = None) -> float:
    """Mean over choices of the probability of parameter-free skips; NaN for no choices.

    Without ``space`` the strides are unknown and every skip op counts (an upper bound).
    """
    sites = choice_sites(space) if space is not None else {}
    masses = [
        sum(p for op, p in dist.items() if is_skip(op, sites[label].stride if label in sites else 1))
        for label, dist in probs.items()
    ]
    return sum(masses) / len(masses) if masses else math.nan


def skip_counts(arch: Architecture) -> dict[str, int]:
    """Parameter-free skips among the kept edges / blocks, per cell or block type (``normal``, ``reduce``)."""
    out = {"normal": 0, "reduce": 0}
    for d in arch.decisions():
        out[d.type] = out.get(d.type, 0) + is_skip(d.op, d.stride)
    return out


def skip_count(arch: Architecture) -> int:
    """Number of kept edges / blocks that are parameter-free skips (see :func:`is_skip`)."""
    return sum(skip_counts(arch).values())


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
        share = sum(is_skip(d.op, d.stride) for d in blocks) / len(blocks) if blocks else 0.0
        if share > t.max_skip_share:
            reasons.append(f"skip_share: {share:.2f} of blocks choose a skip op (max {t.max_skip_share})")
    elif arch is not None:
        for cell in arch.cells:
            if cell.type != "normal":
                continue
            n = sum(is_skip(e.op, 1) for e in cell.edges)
            if n > t.max_skip_per_cell:
                cap = t.max_skip_per_cell
                reasons.append(f"skip_count: normal {cell.name} keeps {n} parameter-free skips (max {cap})")
    mass = skip_mass(probs, arch.space if arch is not None else None)
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
    ``probs``: ``edge_entropy``, ``param_free_mass``, ``skip_count`` (parameter-free skips),
    ``skip_count_by_type`` (``{"normal", "reduce"}``), ``collapse`` ``{"flagged", "reasons"}``.
    """
    reasons = collapse_flags(probs, arch, thresholds)
    mass = param_free_mass(probs, arch.space)
    return {
        "edge_entropy": edge_entropy(probs),
        "param_free_mass": None if math.isnan(mass) else mass,
        "skip_count": skip_count(arch),
        "skip_count_by_type": skip_counts(arch),
        "collapse": {"flagged": bool(reasons), "reasons": reasons},
    }
