"""Every ``pflnas search --strategy`` name: kind, a one-line description and its factory, without torch.

One-shot strategies are :class:`~pflnas.strategies.base.Strategy` classes stepped by the supernet loop; the
built-ins are declared here with factories named ``"module:function"`` (imported by
:func:`create_strategy`), so help texts, listings and config checks never load torch. Multi-trial
strategies (:mod:`pflnas.multitrial`) train one discrete network per Optuna trial; they have no factory
here and are listed by name so that errors name every strategy without importing Optuna.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pflnas.errors import ConfigError
from pflnas.lazy import LazyFactory
from pflnas.names import name_hint

if TYPE_CHECKING:
    from pflnas.config.search import ArchOptimConfig
    from pflnas.strategies.base import Strategy

StrategyFactory = Callable[["ArchOptimConfig"], "Strategy"]


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    kind: str  # "one-shot" or "multi-trial"
    description: str
    factory: Callable[..., Any] | None = None  # None for multi-trial strategies
    # the class's Strategy.seed_groups, by name: a study decides which arms to group without torch
    seed_groups: bool = False


_STRATEGIES: dict[str, StrategyInfo] = {}


def register_strategy(
    name: str, description: str = "", seed_groups: bool = False
) -> Callable[[StrategyFactory], StrategyFactory]:
    """Decorator: register a one-shot strategy factory ``(ArchOptimConfig) -> Strategy`` under ``name``
    (``seed_groups``: what the class's ``Strategy.seed_groups`` says)."""

    def decorator(factory: StrategyFactory) -> StrategyFactory:
        _add(StrategyInfo(name, "one-shot", description, factory, seed_groups))
        return factory

    return decorator


def _add(info: StrategyInfo) -> None:
    if info.name in _STRATEGIES:
        raise ValueError(f"strategy {info.name!r} is already registered")
    _STRATEGIES[info.name] = info


def _declare(name: str, target: str, description: str, seed_groups: bool = False) -> None:
    factory = LazyFactory(f"pflnas.strategies.{target}")
    _add(StrategyInfo(name, "one-shot", description, factory, seed_groups))


_DARTS1 = "DARTS, first order: softmax-mixed ops, alternating weight and alpha steps"
_declare("darts", "darts:darts", _DARTS1, seed_groups=True)
_DARTS2 = "DARTS, second order: unrolled weight step, finite-difference Hessian"
_declare("darts2", "darts:darts2", _DARTS2, seed_groups=True)
_declare("gdas", "gdas:gdas", "GDAS: one hard Gumbel-softmax path per edge or block, temperature 10 -> 0.1")
_PCDARTS = "PC-DARTS: partial channels (K=4), edge normalisation, 30% warm-up"
_declare("pcdarts", "pcdarts:pcdarts", _PCDARTS, seed_groups=True)
_declare("spos", "spos:spos", "single-path one-shot: uniform path training, then evolution on the supernet")
_declare("spos_random", "spos:spos_random", "the SPOS supernet with random candidates (matched baseline)")
for _name, _what in (
    ("evolution", "multi-trial: regularized evolution (Optuna sampler), each trial trained briefly"),
    ("nsga2", "multi-trial: NSGA-II on accuracy vs measured latency (or parameters)"),
    ("random", "multi-trial: uniform random trials (the matched-budget baseline)"),
):
    _add(StrategyInfo(_name, "multi-trial", _what))

MULTI_TRIAL_STRATEGIES: tuple[str, ...] = tuple(n for n, i in _STRATEGIES.items() if i.kind == "multi-trial")


def list_strategies() -> list[str]:
    """The registered one-shot strategies (:class:`Strategy` classes stepped by the supernet loop)."""
    return sorted(n for n, i in _STRATEGIES.items() if i.kind == "one-shot")


def seed_group_strategies() -> list[str]:
    """The one-shot strategies whose seeds can run as one grouped network (``pflnas search --seeds``)."""
    return sorted(n for n, i in _STRATEGIES.items() if i.seed_groups)


def strategy_infos() -> list[StrategyInfo]:
    """Every strategy, one-shot first, for listings."""
    return sorted(_STRATEGIES.values(), key=lambda i: (i.kind != "one-shot", i.name))


def strategy_kinds() -> dict[str, list[str]]:
    """Every ``pflnas search --strategy`` name by kind: ``{"one-shot": [...], "multi-trial": [...]}``."""
    return {"one-shot": list_strategies(), "multi-trial": list(MULTI_TRIAL_STRATEGIES)}


def describe_strategies() -> str:
    """``"one-shot: darts, ...; multi-trial: evolution, ..."`` for help texts and errors."""
    return "; ".join(f"{kind}: {', '.join(names)}" for kind, names in strategy_kinds().items())


def check_strategy(name: str) -> StrategyInfo:
    """The registry entry of ``name``; an unknown name is one ConfigError line with the closest name."""
    info = _STRATEGIES.get(name)
    if info is None:
        hint = name_hint(name, _STRATEGIES)
        raise ConfigError(f"unknown strategy {name!r}{hint}; available: {describe_strategies()}")
    return info


def create_strategy(name: str, arch_optim: ArchOptimConfig) -> Strategy:
    info = check_strategy(name)
    if info.factory is None:
        raise ConfigError(
            f"{name!r} is a multi-trial strategy: run it with pflnas.multitrial, not a supernet"
        )
    return info.factory(arch_optim)
