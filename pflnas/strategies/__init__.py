"""Search strategies behind one interface, looked up by name."""

from pflnas.strategies import darts as _darts  # noqa: F401  (registers darts, darts2)
from pflnas.strategies import gdas as _gdas  # noqa: F401  (registers gdas)
from pflnas.strategies import pcdarts as _pcdarts  # noqa: F401  (registers pcdarts)
from pflnas.strategies.base import (
    Batch,
    StepContext,
    Strategy,
    create_strategy,
    list_strategies,
    register_strategy,
)

__all__ = ["Batch", "StepContext", "Strategy", "create_strategy", "list_strategies", "register_strategy"]
