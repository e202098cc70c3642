"""The chance rate: the parameter-free share expected when the architecture weights are uniformly random.

A share means nothing without it: in ``cell_v1`` a coin-flip search keeps parameter-free ops on 0.600 of
normal-cell edges but only on about 0.472 of reduction-cell edges (stride-2 ``skip_connect`` is a
FactorizedReduce with weights), so "normal above reduce" is partly the null. Under exchangeable random
weights every derivation rule picks each choice's op uniformly among the candidates it allows at that
stride, and a DARTS node keeps a uniformly random set of ``keep_edges`` sources; the rates below follow
from that by exact enumeration of the (param-free count, counted count) distribution, never by sampling.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from pflnas.arch.sites import ChoiceSite, choice_sites
from pflnas.ops import PARAM_FREE, get_op
from pflnas.spaces.config import SpaceConfig

Distribution = dict[tuple[int, int], Fraction]  # (param-free choices k, counted choices n) -> probability
ONE = Fraction(1)
Where = Mapping[str, Any] | Callable[[ChoiceSite], bool] | None


@dataclass(frozen=True)
class DerivationRule:
    """How a strategy turns weights into a discrete architecture, as far as chance is concerned.

    ``keep_top`` keeps that many incoming edges per node (their op never ``none``); otherwise every choice
    keeps its argmax among all candidates valid at its stride (``none`` included; it counts for neither side).
    """

    name: str
    description: str


RULES = {
    "top_k_edges": DerivationRule(
        "top_k_edges", "DARTS: each node keeps its 2 strongest incoming edges, each its best non-none op"
    ),
    "top_k_edges_normalised": DerivationRule(
        "top_k_edges_normalised",
        "PC-DARTS: as DARTS, edge strength scaled by the edge-normalisation weights",
    ),
    "argmax_every_edge": DerivationRule("argmax_every_edge", "NB201: every edge keeps its argmax op"),
    "one_op_per_block": DerivationRule(
        "one_op_per_block", "block spaces: each block keeps its best op valid at its stride"
    ),
}


def derivation_rule(space: SpaceConfig, strategy: str | None = None) -> DerivationRule:
    """The rule a strategy's found.json follows in ``space`` (multi-trial genomes follow the same rules)."""
    if space.is_block:
        return RULES["one_op_per_block"]
    if space.keep_edges is None:
        return RULES["argmax_every_edge"]
    return RULES["top_k_edges_normalised" if strategy == "pcdarts" else "top_k_edges"]


def _candidates(space: SpaceConfig, site: ChoiceSite, rule: DerivationRule) -> list[str]:
    ops = [op for op in space.ops if get_op(op).supports(space.context, site.stride)]
    if rule.name.startswith("top_k"):
        ops = [op for op in ops if not get_op(op).is_zero]
    return ops


def _site_outcomes(space: SpaceConfig, site: ChoiceSite, rule: DerivationRule) -> Distribution:
    """One kept choice: (1, 1) parameter-free, (0, 1) trainable, (0, 0) ``none`` -- by uniform op choice."""
    ops = _candidates(space, site, rule)
    out: Distribution = {}
    for op in ops:
        key = (int(get_op(op).role(site.stride) == PARAM_FREE), int(not get_op(op).is_zero))
        out[key] = out.get(key, Fraction(0)) + Fraction(1, len(ops))
    return out


def _convolve(a: Distribution, b: Distribution) -> Distribution:
    out: Distribution = {}
    for (ka, na), pa in a.items():
        for (kb, nb), pb in b.items():
            key = (ka + kb, na + nb)
            out[key] = out.get(key, Fraction(0)) + pa * pb
    return out


def _matches(site: ChoiceSite, where: Where) -> bool:
    if where is None:
        return True
    if callable(where):
        return bool(where(site))
    return all(getattr(site, k) == v for k, v in where.items())


def _units(space: SpaceConfig) -> list[list[ChoiceSite]]:
    """Choices that are selected together: a DARTS node's incoming edges, else each choice alone."""
    sites = list(choice_sites(space).values())
    if space.is_block or space.keep_edges is None:
        return [[s] for s in sites]
    units: dict[tuple[str, int | None], list[ChoiceSite]] = {}
    for s in sites:
        units.setdefault((s.group, s.node), []).append(s)
    return list(units.values())


def share_distribution(space: SpaceConfig, strategy: str | None = None, where: Where = None) -> Distribution:
    """Exact distribution of (parameter-free, counted) choices of one random run, restricted to the choices
    ``where`` selects (a mapping of :class:`ChoiceSite` fields to values, or a predicate)."""
    rule = derivation_rule(space, strategy)
    keep = space.keep_edges if rule.name.startswith("top_k") else None
    total: Distribution = {(0, 0): ONE}
    for unit in _units(space):
        outcomes = [_site_outcomes(space, s, rule) if _matches(s, where) else {(0, 0): ONE} for s in unit]
        if keep is None or keep >= len(unit):
            for o in outcomes:
                total = _convolve(total, o)
            continue
        subsets = list(itertools.combinations(range(len(unit)), keep))
        mix: Distribution = {}
        for subset in subsets:
            part: Distribution = {(0, 0): Fraction(1, len(subsets))}
            for i in subset:
                part = _convolve(part, outcomes[i])
            for key, p in part.items():
                mix[key] = mix.get(key, Fraction(0)) + p
        total = _convolve(total, mix)
    return total


def chance_share(space: SpaceConfig, strategy: str | None = None, where: Where = None) -> float:
    """Expected per-run parameter-free share under uniformly random weights: ``E[k / n | n > 0]``.

    This is the null for a mean of per-run shares (the run-level headline); NaN when the selection can
    never hold a counted choice.
    """
    if callable(where):
        return _expect(share_distribution(space, strategy, where))
    return _cached(_space_key(space), strategy, _where_key(where))


def _expect(dist: Distribution) -> float:
    mass = sum((p for (_, n), p in dist.items() if n > 0), Fraction(0))
    if mass <= 0:
        return float("nan")
    return float(sum((p * Fraction(k, n) for (k, n), p in dist.items() if n > 0), Fraction(0)) / mass)


def _space_key(space: SpaceConfig) -> str:
    return json.dumps(space.to_dict(), sort_keys=True, default=str)


def _where_key(where: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((where or {}).items()))


@functools.lru_cache(maxsize=4096)
def _cached(space_key: str, strategy: str | None, where: tuple[tuple[str, Any], ...]) -> float:
    from pflnas.spaces.config import space_from_dict

    space = space_from_dict(json.loads(space_key), "chance")
    return _expect(share_distribution(space, strategy, dict(where) or None))


SITE_FIELDS = ("group", "label", "cell_type", "stage", "position", "node", "source", "stride")


def chance_keys(runs: Any) -> dict[str, tuple[str, str]]:
    """``{run_id: (space key, strategy)}`` of complete runs: what :func:`run_chance` needs per run."""
    return {r.run_id: (_space_key(r.arch.space), r.strategy) for r in runs if r.arch is not None}


def run_chance(key: tuple[str, str], where: Mapping[str, Any] | None = None) -> float:
    """:func:`chance_share` of one run (a :func:`chance_keys` value) restricted by site fields ``where``."""
    clean = {k: _plain(v) for k, v in (where or {}).items() if k in SITE_FIELDS}
    return _cached(key[0], key[1] or None, _where_key(clean))


def _plain(value: Any) -> Any:
    """pandas/numpy scalars as Python values (``<NA>``/NaN as None, as :class:`ChoiceSite` holds them)."""
    try:
        if value is None or value != value:  # NaN
            return None
    except TypeError:  # pd.NA
        return None
    return value.item() if hasattr(value, "item") else value
