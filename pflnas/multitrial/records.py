"""The files of a multi-trial run directory: ``trials.csv``, ``pareto.csv`` and ``metrics.jsonl`` rows.

``metrics.jsonl`` has one row per complete trial in trial order, shaped like a one-shot search's epoch rows
so that :mod:`pflnas.analysis` reads these runs too: ``epoch`` counts rows; ``trial``, ``trial_accuracy``,
``trial_param_free_share`` (and ``trial_<cost>``) describe that trial; ``val_acc``, ``param_free_share``,
``op_counts`` and ``probs`` describe the incumbent -- the architecture the search would return after that
trial (the rule of :data:`~pflnas.multitrial.runner.SELECTION_RULES`) -- so the last row matches found.json.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pflnas.multitrial.runner import TrialRecord, TrialsResult, choose, pareto_front
from pflnas.multitrial.space import search_space
from pflnas.utils_io import atomic_write_text


def _num(value: float | None, digits: int = 6) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return round(float(value), digits)


def _ops(t: TrialRecord) -> str:
    if t.architecture is None:
        return ""
    return " ".join(f"{op}:{n}" for op, n in sorted(t.architecture.op_counts().items()))


def _metric_keys(result: TrialsResult) -> list[str]:
    first = [o.key for o in result.objectives]
    rest = sorted({k for t in result.trials for k in t.metrics} - set(first))
    return first + rest


def _summary(t: TrialRecord, keys: Sequence[str]) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state,
        **{k: _num(t.metrics.get(k)) for k in keys},
        "param_free_share": _num(t.param_free_share),
        "op_counts": _ops(t),
        "duration_s": _num(t.duration_s, 3),
        "retry_of": "" if t.retry_of is None else t.retry_of,
        "parent": "" if t.parent is None else t.parent,
        "worker": t.worker or "",
    }


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_trials_csv(result: TrialsResult, path: Path) -> Path:
    """Every trial: number, state, metrics, param-free share, op counts, retry/parent links, the worker
    (``host:pid``) that ran it, each choice."""
    keys = _metric_keys(result)
    names = list(search_space(result.space))
    rows = [{**_summary(t, keys), **{n: t.params.get(n, "") for n in names}} for t in result.trials]
    columns = list(_summary(result.trials[0], keys)) + names if result.trials else ["number", "state"]
    return atomic_write_text(path, _csv(rows, columns))


def write_pareto_csv(result: TrialsResult, path: Path) -> Path:
    """The Pareto front by increasing cost; ``chosen`` marks the point written to found.json."""
    keys = _metric_keys(result)
    best = result.best.number if result.best is not None else None
    rows = [{**_summary(t, keys), "chosen": int(t.number == best)} for t in result.pareto]
    columns = [
        *("number", "state", *keys, "param_free_share", "op_counts", "duration_s", "retry_of", "parent"),
        "worker",
    ]
    return atomic_write_text(path, _csv(rows, [*columns, "chosen"]))


def metrics_rows(result: TrialsResult) -> list[dict[str, Any]]:
    """The ``metrics.jsonl`` rows (see the module docstring)."""
    rows: list[dict[str, Any]] = []
    done: list[TrialRecord] = []
    cost = result.objectives[1] if len(result.objectives) > 1 else None
    for t in result.complete:
        if t.architecture is None:
            continue
        done.append(t)
        incumbent = choose(pareto_front(done, result.objectives), result.objectives)
        assert incumbent is not None and incumbent.architecture is not None
        share, trial_share = incumbent.param_free_share, t.param_free_share
        row: dict[str, Any] = {
            "epoch": len(rows),
            "trial": t.number,
            "trial_accuracy": t.metrics.get("accuracy"),
            "trial_param_free_share": None if math.isnan(trial_share) else trial_share,
            "incumbent": incumbent.number,
            "val_acc": incumbent.metrics.get("accuracy"),
            "param_free_share": None if math.isnan(share) else share,
            "op_counts": incumbent.architecture.op_counts(),
            "epoch_time": t.duration_s,
        }
        if cost is not None:
            row[f"trial_{cost.key}"] = t.metrics.get(cost.key)
            row[cost.key] = incumbent.metrics.get(cost.key)
        row["probs"] = incumbent.architecture.probabilities
        rows.append(row)
    return rows
