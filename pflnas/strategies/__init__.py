"""Search strategies behind one interface, looked up by name."""

from pflnas.strategies import darts as _darts  # noqa: F401  (registers darts, darts2)
from pflnas.strategies import gdas as _gdas  # noqa: F401  (registers gdas)
from pflnas.strategies import pcdarts as _pcdarts  # noqa: F401  (registers pcdarts)
from pflnas.strategies import spos as _spos  # noqa: F401  (registers spos, spos_random)
from pflnas.strategies.base import (
    MULTI_TRIAL_STRATEGIES,
    Batch,
    StepContext,
    Strategy,
    create_strategy,
    describe_strategies,
    list_strategies,
    register_strategy,
    strategy_kinds,
)

__all__ = [
    "MULTI_TRIAL_STRATEGIES",
    "Batch",
    "StepContext",
    "Strategy",
    "create_strategy",
    "describe_strategies",
    "list_strategies",
    "register_strategy",
    "strategy_kinds",
]
