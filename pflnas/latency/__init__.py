"""Measured-latency-aware search: a per-op latency table of a space on a device, and the expected latency
of a supernet's op probabilities, added to the architecture loss (``latency.weight`` per ms)."""

from pflnas.latency.objective import LatencyTerm, expected_latency
from pflnas.latency.positions import Position, choice_positions
from pflnas.latency.table import (
    LatencyTable,
    TableSource,
    cache_path,
    cached_table,
    load_table,
    measure_table,
    table_key,
)

__all__ = [
    "LatencyTable",
    "LatencyTerm",
    "Position",
    "TableSource",
    "cache_path",
    "cached_table",
    "choice_positions",
    "expected_latency",
    "load_table",
    "measure_table",
    "table_key",
]
