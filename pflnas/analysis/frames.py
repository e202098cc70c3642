"""Tidy pandas tables of runs: one row per choice, per trajectory point, or per run.

Analyses and plots read these frames instead of run directories, so each frame has a fixed column contract
(``CHOICE_COLUMNS``, ``TRAJECTORY_COLUMNS``, ``SUMMARY_COLUMNS``; see each builder's docstring) that
callers may rely on. Ids that do not apply are nullable ``Int64`` (``<NA>``) rather than floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from pflnas.analysis.load import RunData
from pflnas.arch.chance import chance_keys
from pflnas.arch.collapse import (
    DEFAULT_THRESHOLDS,
    CollapseThresholds,
    collapse_flags,
    normalized_entropy,
    param_free_mass,
    skip_counts,
)
from pflnas.arch.derive import derive_architecture
from pflnas.arch.record import Architecture
from pflnas.arch.sites import ChoiceSite, choice_sites
from pflnas.errors import PflnasError
from pflnas.ops import PARAM_FREE, get_op
from pflnas.spaces.labels import edge_label

ID_COLUMNS = ["run_id", "study", "space", "kind", "strategy", "alpha_mode", "seed", "setting", "dataset"]
CHOICE_COLUMNS = [
    *ID_COLUMNS,
    *["group", "label", "cell_type", "stage", "position", "node", "source"],
    *["op", "stride", "param_free", "is_zero", "prob", "pf_mass"],
]
TRAJECTORY_COLUMNS = [
    *["run_id", "space", "strategy", "alpha_mode", "setting", "seed", "epoch"],
    *["label", "group", "cell_type", "stride", "op", "prob", "param_free", "is_zero"],
]
SUMMARY_COLUMNS = [
    *ID_COLUMNS,
    *["epochs", "param_free_share", "val_acc", "train_acc", "wall_time_s", "mean_entropy", "norm_entropy"],
    *["param_free_mass", "skip_count", "skip_count_normal", "skip_count_reduce"],
    *["collapse_flagged", "collapse_reasons", "collapse_source"],
    *["complete", "path"],
]
_NULLABLE_INTS = ("seed", "stage", "position", "node", "source")


def _ids(run: RunData) -> dict[str, Any]:
    return {c: getattr(run, c) for c in ID_COLUMNS}


def choices_frame(runs: Iterable[RunData]) -> pd.DataFrame:
    """One row per complete run x alpha group x kept edge (cells) or block choice (block spaces).

    Columns: ``CHOICE_COLUMNS``; only complete runs. ``param_free`` is parameter-freeness at the choice's
    stride (``none`` is never parameter-free; its rows have ``is_zero`` and are left out of shares).
    ``seed``/``stage``/``position``/``node``/``source`` are nullable ``Int64`` (``<NA>`` where not defined).

    ``attrs["chance_keys"]`` records each run's space and strategy, so the share tables and comparisons
    can give every group of choices its chance rate (:mod:`pflnas.arch.chance`).

    ``prob`` is the final probability of the chosen op, ``pf_mass`` the summed final probability of the ops
    parameter-free at that choice's stride (NaN where the record has no probabilities). ``position`` is the
    edge's target node or the block index (``<NA>`` for shared block groups).
    """
    runs = list(runs)
    rows: list[dict[str, Any]] = []
    for run in runs:
        if not run.complete or run.arch is None:
            continue
        arch = run.arch
        sites = choice_sites(arch.space)
        by_group = {s.group: s for s in sites.values()}  # block groups have one site each
        ids = _ids(run)
        if arch.space.is_block:
            picks = [(by_group[b.name], b.op) for b in arch.blocks]
        else:
            picks = [(sites[edge_label(c.name, e.node, e.source)], e.op) for c in arch.cells for e in c.edges]
        for site, op in picks:
            rows.append({**ids, **_choice_row(site, op, arch.probabilities.get(site.label))})
    df = _typed(pd.DataFrame(rows, columns=CHOICE_COLUMNS))
    df.attrs["chance_keys"] = chance_keys(r for r in runs if r.complete)
    return df


def _choice_row(site: ChoiceSite, op: str, dist: dict[str, float] | None) -> dict[str, Any]:
    mass = math.nan
    if dist:
        mass = sum(p for o, p in dist.items() if get_op(o).role(site.stride) == PARAM_FREE)
    return {
        "group": site.group,
        "label": site.label,
        "cell_type": site.cell_type,
        "stage": site.stage,
        "position": site.position,
        "node": site.node,
        "source": site.source,
        "op": op,
        "stride": site.stride,
        "param_free": get_op(op).role(site.stride) == PARAM_FREE,
        "is_zero": get_op(op).is_zero,
        "prob": dist.get(op, math.nan) if dist else math.nan,
        "pf_mass": mass,
    }


def trajectory_frame(runs: Iterable[RunData]) -> pd.DataFrame:
    """One row per run x epoch x label x op from ``metrics.jsonl`` ``probs`` (partial runs included).

    Columns: ``TRAJECTORY_COLUMNS``; every run with metrics, incomplete ones included.
    """
    rows: list[tuple[Any, ...]] = []
    for run in runs:
        sites = choice_sites(run.space_config) if run.space_config is not None else {}
        head = (run.run_id, run.space, run.strategy, run.alpha_mode, run.setting, run.seed)
        for row in run.metrics:
            probs = row.get("probs") or {}
            epoch = row.get("epoch")
            for label, dist in probs.items():
                site = sites.get(label)
                group = site.group if site else label.split(".", 1)[0]
                ctype = site.cell_type if site else None
                stride = site.stride if site else None
                for op, p in dist.items():
                    pf = get_op(op).role(stride) == PARAM_FREE if stride is not None else None
                    zero = get_op(op).is_zero if stride is not None else None
                    rows.append((*head, epoch, label, group, ctype, stride, op, p, pf, zero))
    df = pd.DataFrame(rows, columns=TRAJECTORY_COLUMNS)
    df["seed"] = df["seed"].astype("Int64")
    return df


def summary_frame(
    runs: Iterable[RunData], thresholds: CollapseThresholds = DEFAULT_THRESHOLDS
) -> pd.DataFrame:
    """One row per run (incomplete ones too, ``complete`` False): final metrics and collapse diagnostics.

    Columns: ``SUMMARY_COLUMNS``; every run. The collapse diagnostics come from the last metrics row when
    the search wrote them with parameter-free skip counts (``collapse_source == "live"``), else they are
    computed from its probabilities with the run's own thresholds (``"computed"``; ``"none"`` without any
    probabilities). ``skip_count`` counts parameter-free skips (stride-1 identities), also split into
    ``skip_count_normal``/``skip_count_reduce``. ``seed``/``epochs``/skip counts are nullable ``Int64``;
    ``collapse_reasons`` is a list of strings.

    ``param_free_share`` is the found architecture's (the last epoch's for an unfinished run);
    ``wall_time_s`` the provenance wall time, else the summed ``epoch_time``; ``collapse_reasons`` a list.
    """
    rows = []
    for run in runs:
        last = run.metrics[-1] if run.metrics else {}
        share = run.arch.param_free_share() if run.arch is not None else last.get("param_free_share")
        wall = run.arch.provenance.get("wall_time_s") if run.arch is not None else None
        if wall is None and run.metrics:
            wall = sum(float(r.get("epoch_time") or 0.0) for r in run.metrics)
        diag = _diagnostics(run, last, thresholds)
        rows.append(
            {
                **_ids(run),
                "epochs": len(run.metrics),
                "param_free_share": _num(share),
                "val_acc": _num(last.get("val_acc")),
                "train_acc": _num(last.get("train_acc")),
                "wall_time_s": _num(wall),
                "mean_entropy": _num(last.get("mean_entropy")),
                "norm_entropy": _norm_entropy(run, last),
                **diag,
                "complete": run.complete,
                "path": str(run.path),
            }
        )
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for col in ("seed", "epochs", "skip_count", "skip_count_normal", "skip_count_reduce"):
        df[col] = df[col].astype("Int64")
    return df


def _diagnostics(run: RunData, last: dict[str, Any], thresholds: CollapseThresholds) -> dict[str, Any]:
    """Collapse fields of a run. Live records are trusted only when they count parameter-free skips per
    cell type (``skip_count_by_type``); older ones counted stride-2 skips too and are recomputed."""
    probs = last.get("probs") or (run.arch.probabilities if run.arch is not None else {})
    space = run.space_config
    derived = _derive(run, probs)
    live = last.get("collapse")
    by_type = last.get("skip_count_by_type")
    if isinstance(live, dict) and "flagged" in live and isinstance(by_type, dict):
        flagged, reasons, source = bool(live["flagged"]), list(live.get("reasons") or []), "live"
    elif probs:
        reasons = collapse_flags(probs, derived, _thresholds(run, thresholds))
        flagged, source = bool(reasons), "computed"
        by_type = skip_counts(derived) if derived is not None else {}
    else:
        flagged, reasons, source, by_type = False, [], "none", {}
    mass = last.get("param_free_mass") if source == "live" else None
    if mass is None and probs and space is not None:
        mass = param_free_mass(probs, space)
    by_type = by_type or {}
    return {
        "param_free_mass": _num(mass),
        "skip_count": _num(sum(by_type.values())) if by_type else math.nan,
        "skip_count_normal": _num(by_type.get("normal")),
        "skip_count_reduce": _num(by_type.get("reduce")),
        "collapse_flagged": flagged,
        "collapse_reasons": reasons,
        "collapse_source": source,
    }


def _norm_entropy(run: RunData, last: dict[str, Any]) -> float:
    """Mean normalised entropy of the final weights (1: uniform, so the argmax is decided by noise)."""
    probs = (run.arch.probabilities if run.arch is not None else None) or last.get("probs") or {}
    return normalized_entropy(probs) if probs else math.nan


def _thresholds(run: RunData, default: CollapseThresholds) -> CollapseThresholds:
    """The run's own collapse thresholds (its config's ``collapse`` section) when it has them."""
    section = run.config.get("collapse") if isinstance(run.config, dict) else None
    if default is not DEFAULT_THRESHOLDS or not isinstance(section, dict):
        return default
    fields = {k: section[k] for k in DEFAULT_THRESHOLDS.__dataclass_fields__ if k in section}
    try:
        return CollapseThresholds(**fields)
    except TypeError:
        return default


def _derive(run: RunData, probs: dict[str, dict[str, float]]) -> Architecture | None:
    """The architecture the last epoch's probabilities select (the found one if they cannot be derived)."""
    if run.space_config is not None and probs:
        try:
            return derive_architecture(run.space_config, probs)
        except (PflnasError, KeyError, ValueError):
            pass
    return run.arch


def _num(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    for col in _NULLABLE_INTS:
        df[col] = df[col].astype("Int64")
    for col in ("param_free", "is_zero"):
        df[col] = df[col].astype(bool)
    return df
