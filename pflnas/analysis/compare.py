"""Compare the parameter-free share of two levels of a factor (strategies, α modes, cell types, ...).

The test is on runs: each run gives its share minus its chance rate for the same choices, so two levels
whose null rates differ (normal vs reduction cells, or α modes with different cell-type mixes) are compared
on what the search added, not on what chance gave. Paired when both levels occur in the same runs. The
per-edge Fisher test (and Cochran-Mantel-Haenszel over strata) stays as a labelled secondary view.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.contingency_tables import StratifiedTable

from pflnas.analysis.inference import (
    detectable_difference,
    detectable_difference_two,
    min_p_rank,
    pooled_sd,
    t_interval,
    welch_interval,
    welch_p,
)
from pflnas.analysis.stats import (
    DELTA_CUTS,
    ChanceFn,
    adjust,
    chance_from,
    cliffs_delta,
    counted,
    magnitude,
    per_run,
)

COMPARE_COLUMNS = [
    *["factor", "a", "b", "runs_a", "runs_b", "paired", "share_a", "share_b", "chance_a", "chance_b"],
    *["diff", "excess_diff", "diff_low", "diff_high", "test", "p", "p_holm", "detectable"],
    *["cliffs_delta", "delta_size", "rank_test", "rank_p", "min_rank_p"],
    *["k_a", "n_a", "k_b", "n_b", "edge_p", "edge_test", "verdict", "note"],
]


def compare(
    choices: pd.DataFrame,
    factor: str,
    a: Any,
    b: Any,
    by: Sequence[str] | None = None,
    paired: bool | None = None,
    strata: str | None = None,
    chance: ChanceFn | None = None,
) -> pd.DataFrame:
    """Compare ``factor == a`` with ``factor == b``, one row per ``by`` group (:data:`COMPARE_COLUMNS`).

    Run level (the headline): per run, share minus the chance rate of its choices; ``excess_diff`` is the
    difference of the two levels' mean excess with a Welch (or, ``paired``, paired) t-interval and p; the
    rows' p-values are Holm-adjusted together (``p_holm``). ``detectable`` is the smallest excess
    difference detectable at 80% power; ``rank_p`` a Mann-Whitney / Wilcoxon test with Cliff's delta, and
    ``min_rank_p`` the smallest p that rank test can give with these runs. Per edge (secondary): Fisher's
    exact test, or Cochran-Mantel-Haenszel over the levels of ``strata`` (``edge_test`` says which).
    ``paired=None``: paired when the two levels occur in the same runs. Degenerate input gives NaN and a
    ``note``, never an exception.
    """
    chance = chance or chance_from(choices)
    groups = choices.groupby(list(by), sort=True, dropna=False) if by else [((), choices)]
    rows = []
    for key, df in groups:
        key = key if isinstance(key, tuple) else (key,)
        where = dict(zip(by or [], key))
        rows.append({**where, **_compare_one(df, factor, a, b, paired, strata, chance, where)})
    table = pd.DataFrame(rows, columns=[*(by or []), *COMPARE_COLUMNS])
    return adjust(table, "p", compare_verdict)


def _excess(df: pd.DataFrame, chance: ChanceFn | None, where: Mapping[str, Any]) -> pd.Series:
    """Per-run share minus the run's chance rate for the same choices (NaN without a chance rate)."""
    per = per_run(df)
    if chance is None:
        return per["share"] * math.nan
    values = [chance(r, where) for r in per.index]
    return per["share"] - pd.Series(values, index=per.index, dtype=float)


def _compare_one(
    choices: pd.DataFrame,
    factor: str,
    a: Any,
    b: Any,
    paired: bool | None,
    strata: str | None,
    chance: ChanceFn | None,
    where: Mapping[str, Any],
) -> dict[str, Any]:
    df = counted(choices)
    mask_a, mask_b = df[factor].eq(a).fillna(False).astype(bool), df[factor].eq(b).fillna(False).astype(bool)
    da, db = df[mask_a], df[mask_b]
    notes: list[str] = []
    ra, rb = per_run(da), per_run(db)
    wa, wb = {**where, factor: a}, {**where, factor: b}
    ea, eb = _excess(da, chance, wa), _excess(db, chance, wb)
    common = ra.index.intersection(rb.index)
    is_paired = bool(len(common)) if paired is None else paired
    if is_paired:
        dropped = len(ra.index.union(rb.index)) - len(common)
        if dropped:
            notes.append(f"{dropped} run(s) without both levels left out of the paired test")
        ra, rb, ea, eb = ra.loc[common], rb.loc[common], ea.loc[common], eb.loc[common]
    use_excess = not (ea.isna().any() or eb.isna().any())
    if not use_excess:
        notes.append("chance rate unknown: raw shares compared")
    xa, xb = (ea, eb) if use_excess else (ra["share"], rb["share"])
    row: dict[str, Any] = {
        "factor": factor,
        "a": a,
        "b": b,
        "runs_a": len(ra),
        "runs_b": len(rb),
        "paired": is_paired,
        "share_a": float(ra["share"].mean()) if len(ra) else math.nan,
        "share_b": float(rb["share"].mean()) if len(rb) else math.nan,
        "chance_a": float((ra["share"] - ea).mean()) if len(ra) and use_excess else math.nan,
        "chance_b": float((rb["share"] - eb).mean()) if len(rb) and use_excess else math.nan,
    }
    row["diff"] = row["share_a"] - row["share_b"]
    row.update(_run_test(xa.to_numpy(float), xb.to_numpy(float), is_paired, notes))
    row.update(_edge_test(da, db, strata, notes))
    row["note"] = "; ".join(notes)
    return row


def _run_test(xa: np.ndarray, xb: np.ndarray, is_paired: bool, notes: list[str]) -> dict[str, Any]:
    """The run-level interval and tests of ``mean(xa) - mean(xb)``."""
    out: dict[str, Any] = {"test": "paired t" if is_paired else "Welch t", "p": math.nan}
    out["rank_test"] = "wilcoxon" if is_paired else "mannwhitneyu"
    out["rank_p"] = math.nan
    out["min_rank_p"] = min_p_rank(len(xa)) if is_paired else min_p_rank(len(xa), len(xb))
    if is_paired:
        diffs = xa - xb
        out["excess_diff"], out["diff_low"], out["diff_high"] = t_interval(diffs)
        sd = float(diffs.std(ddof=1)) if len(diffs) > 1 else math.nan
        out["detectable"] = detectable_difference(sd, len(diffs))
    else:
        out["excess_diff"], out["diff_low"], out["diff_high"] = welch_interval(xa, xb)
        out["detectable"] = detectable_difference_two(pooled_sd(xa, xb), len(xa), len(xb))
    out["cliffs_delta"] = cliffs_delta(xa, xb) if min(len(xa), len(xb)) >= 2 else math.nan
    out["delta_size"] = magnitude(out["cliffs_delta"], DELTA_CUTS)
    values = np.concatenate([xa, xb])
    if min(len(xa), len(xb)) < 2:
        notes.append("too few runs for a run-level test (2 per level needed)")
    elif np.ptp(values) == 0 or (is_paired and np.all(xa == xb)):
        notes.append("all per-run values identical: no run-level test")
    elif is_paired:
        if np.ptp(xa - xb) > 0:
            out["p"] = float(stats.ttest_rel(xa, xb).pvalue)
        out["rank_p"] = float(stats.wilcoxon(xa, xb).pvalue)
    else:
        out["p"] = welch_p(xa, xb)
        out["rank_p"] = float(stats.mannwhitneyu(xa, xb, alternative="two-sided").pvalue)
    return out


def _edge_test(da: pd.DataFrame, db: pd.DataFrame, strata: str | None, notes: list[str]) -> dict[str, Any]:
    """Pooled per-edge counts and their test (Fisher, or CMH across ``strata``): a secondary view."""
    ka, na, kb, nb = int(da["param_free"].sum()), len(da), int(db["param_free"].sum()), len(db)
    out: dict[str, Any] = {"k_a": ka, "n_a": na, "k_b": kb, "n_b": nb, "edge_p": math.nan}
    out["edge_test"] = "fisher"
    if not (na and nb):
        notes.append("no choices at one level")
        return out
    if strata is not None:
        tables = []
        for level in sorted(set(da[strata].dropna()) & set(db[strata].dropna()), key=str):
            sa, sb = da[da[strata] == level], db[db[strata] == level]
            tables.append(np.asarray([_counts(sa), _counts(sb)], dtype=float))
        if len(tables) >= 2:
            out["edge_test"] = f"CMH over {strata}"
            out["edge_p"] = float(StratifiedTable(tables).test_null_odds(correction=True).pvalue)
            return out
    out["edge_p"] = float(stats.fisher_exact([[ka, na - ka], [kb, nb - kb]]).pvalue)
    return out


def _counts(df: pd.DataFrame) -> list[int]:
    free = int(df["param_free"].sum())
    return [free, len(df) - free]


def compare_verdict(r: Mapping[str, Any], alpha: float = 0.05) -> str:
    """One line: which level the runs put higher, or that they show no difference and what they could not
    detect (the difference, interval and p-values are in the row's own columns)."""
    a, b, factor = r["a"], r["b"], r["factor"]
    if math.isnan(r["share_a"]) or math.isnan(r["share_b"]):
        return f"cannot compare {factor}={a!r} with {b!r}: {r['note']}"
    what = "share above chance" if not math.isnan(r["chance_a"]) else "share"
    runs = f"{r['runs_a']} vs {r['runs_b']} runs" + (", paired" if r["paired"] else "")
    p = r["p_holm"]
    if not math.isnan(p) and p < alpha:
        higher, lower = (a, b) if r["excess_diff"] > 0 else (b, a)
        return f"{higher} has a higher {what} than {lower} ({runs})"
    limits = [runs] if not math.isnan(p) else [runs, r["note"] or "no run-level test"]
    if not math.isnan(p) and not math.isnan(r["diff_low"]) and not r["diff_low"] <= 0 <= r["diff_high"]:
        higher, lower = (a, b) if r["excess_diff"] > 0 else (b, a)
        return (
            f"{higher} above {lower} before adjustment only (95% CI excludes 0; p_holm >= {alpha} over "
            f"this report's tests; {runs})"
        )
    if not math.isnan(r["detectable"]):
        limits.append(f"detectable at 80% power: ±{r['detectable']:.2f}")
    if not math.isnan(r["min_rank_p"]) and r["min_rank_p"] > alpha:
        limits.append(f"rank tests cannot reach p < {r['min_rank_p']:.2g}")
    return f"no detectable difference ({'; '.join(limits)})"
