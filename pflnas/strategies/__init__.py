"""Search strategies behind one interface, looked up by name.

The registry (names, kinds, descriptions) loads without torch; the interface (:class:`Strategy`,
:class:`StepContext`, :class:`ArchGrads`, :class:`Batch`, :func:`set_grads`) is imported from
:mod:`pflnas.strategies.base` on first use.
"""

from typing import Any

from pflnas.strategies.registry import (
    MULTI_TRIAL_STRATEGIES,
    create_strategy,
    describe_strategies,
    list_strategies,
    register_strategy,
    seed_group_strategies,
    strategy_infos,
    strategy_kinds,
)

_FROM_BASE = ("ArchGrads", "Batch", "StepContext", "Strategy", "set_grads")


def __getattr__(name: str) -> Any:
    if name in _FROM_BASE:
        from pflnas.strategies import base

        return getattr(base, name)
    raise AttributeError(f"module 'pflnas.strategies' has no attribute {name!r}")


__all__ = [
    "MULTI_TRIAL_STRATEGIES",
    "ArchGrads",
    "Batch",
    "StepContext",
    "Strategy",
    "create_strategy",
    "describe_strategies",
    "list_strategies",
    "register_strategy",
    "seed_group_strategies",
    "set_grads",
    "strategy_infos",
    "strategy_kinds",
]
