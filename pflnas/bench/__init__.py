"""Benchmarks against ground truth: NAS-Bench-201 accuracies for every cell (optional extra ``bench``), the
search signals multi-trial strategies select on, and the table's exhaustive op wins."""

from pflnas.bench.nb201 import NB201Stats, NB201Table, load_nb201_table, nb201_string
from pflnas.bench.op_wins import op_wins, pareto_data, pareto_summary
from pflnas.bench.selection import SELECTIONS, SelectionSpec, SignalFactory
from pflnas.bench.zero_cost import ZeroCostConfig, ZeroCostScorer, signal_quality

__all__ = [
    "SELECTIONS",
    "NB201Stats",
    "NB201Table",
    "SelectionSpec",
    "SignalFactory",
    "ZeroCostConfig",
    "ZeroCostScorer",
    "load_nb201_table",
    "nb201_string",
    "op_wins",
    "pareto_data",
    "pareto_summary",
    "signal_quality",
]
