"""Caps on what a config may ask for: grids of runs and CPU thread counts. Checked before anything is built,
so a typo of a few characters cannot ask for a million runs or a thread pool that kills OpenMP."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pflnas.errors import ConfigError

# A grid is a product: a few short lists can ask for millions of runs. Far above any real study (the paper
# study has 160), low enough that planning and checking one stays instant.
MAX_RUNS = 10_000


def check_list(key: str, values: Sequence[Any]) -> None:
    """``values`` is non-empty and lists each value once (a set: linear, however long the list)."""
    if not values:
        raise ConfigError(f"{key} is empty; list at least one")
    counts = Counter(values)
    if len(counts) < len(values):
        repeated = sorted(str(v) for v, n in counts.items() if n > 1)
        shown = ", ".join(repeated[:5]) + (f" and {len(repeated) - 5} more" if len(repeated) > 5 else "")
        raise ConfigError(f"{key} repeats {shown}; list each once")


def check_grid_size(what: str, **axes: int) -> None:
    """Refuse a grid of more than :data:`MAX_RUNS` ``what`` before a single one is built."""
    total = math.prod(axes.values())
    if total > MAX_RUNS:
        sizes = " x ".join(f"{n:,} {axis.replace('_', ' ')}" for axis, n in axes.items())
        raise ConfigError(
            f"the grid has {total:,} {what} ({sizes}), over the cap of {MAX_RUNS:,} {what} at once; "
            "split it into smaller grids"
        )


# OpenMP dies creating a thread pool of 100000; more threads than a few per core only slow a run down, and
# no machine pflnas runs on has more than a few hundred cores. A fixed cap keeps config.yaml portable.
MAX_THREADS = 1024


def threads_check(key: str, threads: int | None) -> tuple[bool, str]:
    """``(ok, message)`` for a CPU thread count: null (torch's default) or 1..MAX_THREADS."""
    ok = threads is None or 1 <= threads <= MAX_THREADS
    return ok, f"{key} must be >= 1 and at most {MAX_THREADS} (or null: torch's default), got {threads}"
