"""Benchmarks against ground truth: NAS-Bench-201 accuracies for every cell (optional extra ``bench``)."""

from pflnas.bench.nb201 import NB201Stats, NB201Table, load_nb201_table, nb201_string

__all__ = ["NB201Stats", "NB201Table", "load_nb201_table", "nb201_string"]
