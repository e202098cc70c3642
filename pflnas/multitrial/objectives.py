"""What a multi-trial search optimises: accuracy, and optionally one cost (measured latency or parameters)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pflnas.errors import ConfigError


@dataclass(frozen=True)
class Objective:
    """One objective: its config ``name``, the evaluator's metric ``key`` and the optimisation direction."""

    name: str
    key: str
    direction: str  # "maximize" | "minimize"

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


OBJECTIVES: dict[str, Objective] = {
    "accuracy": Objective("accuracy", "accuracy", "maximize"),
    "latency": Objective("latency", "latency_ms", "minimize"),
    "params": Objective("params", "params", "minimize"),
}
ALIASES = {"latency_ms": "latency"}
COSTS = ("latency", "params")


def resolve_objectives(names: Sequence[str], where: str = "objectives") -> tuple[Objective, ...]:
    """``("accuracy",)`` or ``("accuracy", "latency" | "params")`` as :class:`Objective` s."""
    if isinstance(names, str):
        names = (names,)
    resolved = [ALIASES.get(n, n) for n in names]
    if not resolved or resolved[0] != "accuracy" or len(resolved) > 2:
        raise ConfigError(f"{where} must be [accuracy] or [accuracy, latency|params], got {list(names)}")
    if len(resolved) == 2 and resolved[1] not in COSTS:
        raise ConfigError(
            f"{where}: the second objective must be one of {', '.join(COSTS)}, got {names[1]!r}"
        )
    return tuple(OBJECTIVES[n] for n in resolved)


def objective_values(metrics: Mapping[str, float], objectives: Sequence[Objective]) -> tuple[float, ...]:
    """The objective values in ``metrics`` (an evaluator's result); raises ValueError on a bad result."""
    values = []
    for obj in objectives:
        if obj.key not in metrics:
            raise ValueError(f"the evaluator returned no {obj.key!r} (got {sorted(metrics)})")
        value = float(metrics[obj.key])
        if not math.isfinite(value):
            raise ValueError(f"the evaluator returned {obj.key}={value}")
        values.append(value)
    accuracy = values[0]
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"the evaluator returned accuracy={accuracy}, which must be a fraction in [0, 1]")
    return tuple(values)


def dominates(a: Sequence[float], b: Sequence[float], objectives: Sequence[Objective]) -> bool:
    """``a`` is at least as good as ``b`` in every objective and better in one."""
    better = False
    for x, y, obj in zip(a, b, objectives):
        gain = (x - y) if obj.maximize else (y - x)
        if gain < 0:
            return False
        better = better or gain > 0
    return better
