"""How often do parameter-free ops win: shares with intervals, pairwise tests, collapse rates, Pareto fronts.

Choices inside one run are not independent (they share a supernet and a seed), so every share comes with
two intervals: Wilson over the pooled choices (optimistic) and a bootstrap over runs (the honest one when
there are enough seeds). Comparisons likewise report a pooled Fisher test and a run-level rank test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import proportion_confint, proportion_effectsize

SHARE_COLUMNS = [
    *["k", "n", "share", "ci_low", "ci_high", "runs", "boot_low", "boot_high"],
    *["pf_mass", "pf_mass_low", "pf_mass_high"],
]
H_CUTS = (0.2, 0.5, 0.8)  # Cohen's h: small, medium, large (Cohen 1988)
DELTA_CUTS = (0.147, 0.33, 0.474)  # Cliff's delta: small, medium, large (Romano et al. 2006)


def wilson_interval(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n``; ``(nan, nan)`` when ``n == 0``."""
    if n <= 0:
        return math.nan, math.nan
    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    # exact bounds at the edges (the formula leaves rounding residue such as 1e-17 at k = 0)
    return (0.0 if k <= 0 else max(0.0, float(low))), (1.0 if k >= n else min(1.0, float(high)))


def _counted(choices: pd.DataFrame) -> pd.DataFrame:
    """The choices that count towards shares: every op but ``none``."""
    return choices[~choices["is_zero"].astype(bool)]


def _per_run(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby("run_id", sort=True)
    return pd.DataFrame(
        {
            "k": g["param_free"].sum(),
            "n": g.size(),
            "mass": g["pf_mass"].sum(),
            "mass_n": g["pf_mass"].count(),
        }
    )


def _ratio_ci(num: np.ndarray, den: np.ndarray, n_boot: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile bootstrap CI of ``sum(num) / sum(den)`` resampling runs (pairs); NaN under 2 runs."""
    if len(num) < 2 or den.sum() == 0:
        return math.nan, math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        per_run = num / den
    if np.allclose(per_run, per_run[0], rtol=0, atol=1e-12):  # every resample gives the same ratio
        point = float(num.sum() / den.sum())
        return point, point

    def ratio(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return a.sum(axis=axis) / b.sum(axis=axis)

    res = stats.bootstrap(
        (num.astype(float), den.astype(float)),
        ratio,
        paired=True,
        vectorized=True,
        n_resamples=n_boot,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def share_row(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """The :data:`SHARE_COLUMNS` of one group of choices (``none`` rows are dropped here)."""
    df = _counted(df)
    k, n = int(df["param_free"].sum()), len(df)
    low, high = wilson_interval(k, n, 1 - level)
    per = _per_run(df)
    b_low, b_high = _ratio_ci(per["k"].to_numpy(), per["n"].to_numpy(), n_boot, seed, level)
    mass_n = per["mass_n"].sum()
    mass = per["mass"].sum() / mass_n if mass_n else math.nan  # the bootstrap's statistic, same sum order
    m_low, m_high = _ratio_ci(per["mass"].to_numpy(), per["mass_n"].to_numpy(), n_boot, seed, level)
    return {
        "k": k,
        "n": n,
        "share": k / n if n else math.nan,
        "ci_low": low,
        "ci_high": high,
        "runs": len(per),
        "boot_low": b_low,
        "boot_high": b_high,
        "pf_mass": float(mass),
        "pf_mass_low": m_low,
        "pf_mass_high": m_high,
    }


def share_table(
    choices: pd.DataFrame, by: Sequence[str] = (), n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """Parameter-free share per group of ``by`` columns (all choices in one row when ``by`` is empty).

    Columns: the ``by`` columns, then :data:`SHARE_COLUMNS`: ``k`` parameter-free choices of ``n`` (``none``
    excluded), ``share``, Wilson ``ci_low``/``ci_high`` over pooled choices, ``runs``, ``boot_low``/
    ``boot_high`` a percentile bootstrap over runs of the pooled share (NaN under 2 runs), and the
    probability-mass view ``pf_mass`` (mean over choices) with its run bootstrap ``pf_mass_low/high``.
    The bootstrap is reproducible: same ``seed``, same intervals. Missing group keys (NaN) form groups.
    """
    by = list(by)
    if not by:
        return pd.DataFrame([share_row(choices, n_boot, seed, level)], columns=SHARE_COLUMNS)
    rows = []
    for key, df in choices.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), **share_row(df, n_boot, seed, level)})
    return pd.DataFrame(rows, columns=[*by, *SHARE_COLUMNS])


def cliffs_delta(x: Sequence[float], y: Sequence[float]) -> float:
    """Cliff's delta P(x > y) - P(x < y), from the Mann-Whitney U of ``x``; NaN for an empty sample."""
    if len(x) == 0 or len(y) == 0:
        return math.nan
    u = stats.mannwhitneyu(x, y, alternative="two-sided").statistic
    return float(2 * u / (len(x) * len(y)) - 1)


def magnitude(value: float, cuts: tuple[float, float, float]) -> str:
    """``negligible``/``small``/``medium``/``large`` for ``|value|`` against three cut-offs."""
    if math.isnan(value):
        return "n/a"
    names = ("negligible", "small", "medium", "large")
    return names[sum(abs(value) >= c for c in cuts)]


COMPARE_COLUMNS = [
    *["factor", "a", "b", "k_a", "n_a", "share_a", "k_b", "n_b", "share_b", "diff"],
    *["odds_ratio", "fisher_p", "cohens_h", "h_size", "paired", "runs_a", "runs_b", "run_test"],
    *["run_stat", "run_p", "cliffs_delta", "delta_size", "verdict", "note"],
]


def compare(
    choices: pd.DataFrame,
    factor: str,
    a: Any,
    b: Any,
    by: Sequence[str] | None = None,
    paired: bool | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Compare the parameter-free share of ``factor == a`` with ``factor == b`` (per ``by`` group).

    Pooled: Fisher's exact test on the 2x2 counts (``odds_ratio``, ``fisher_p``) with Cohen's h. Run level:
    per-run shares compared by Mann-Whitney U, or by the Wilcoxon signed-rank test when paired by
    ``run_id`` (``paired=None``: paired when the two levels occur within the same runs, e.g. normal vs
    reduce cells; only runs holding both levels are used), with Cliff's delta of per-run shares
    (a vs b; positive: a higher). ``diff = share_a - share_b``. Degenerate input (no choices, fewer than
    2 runs, all per-run shares equal) gives NaN p-values and a ``note``, never an exception. ``verdict``
    is one line of plain English at significance level ``alpha``.
    """
    by = list(by or [])
    if not by:
        return pd.DataFrame([_compare_one(choices, factor, a, b, paired, alpha)], columns=COMPARE_COLUMNS)
    rows = []
    for key, df in choices.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), **_compare_one(df, factor, a, b, paired, alpha)})
    return pd.DataFrame(rows, columns=[*by, *COMPARE_COLUMNS])


def _compare_one(
    choices: pd.DataFrame, factor: str, a: Any, b: Any, paired: bool | None, alpha: float
) -> dict[str, Any]:
    df = _counted(choices)
    da, db = df[df[factor].eq(a).fillna(False).astype(bool)], df[df[factor].eq(b).fillna(False).astype(bool)]
    ka, na, kb, nb = int(da["param_free"].sum()), len(da), int(db["param_free"].sum()), len(db)
    sa, sb = (ka / na if na else math.nan), (kb / nb if nb else math.nan)
    notes: list[str] = []
    odds, fisher_p, h = math.nan, math.nan, math.nan
    if na and nb:
        res = stats.fisher_exact([[ka, na - ka], [kb, nb - kb]])
        odds, fisher_p = float(res.statistic), float(res.pvalue)
        h = float(proportion_effectsize(sa, sb))
    else:
        notes.append(f"no choices at {factor}={a if not na else b!r}")
    ra, rb = _per_run(da), _per_run(db)
    ra, rb = ra["k"] / ra["n"], rb["k"] / rb["n"]
    common = ra.index.intersection(rb.index)
    is_paired = bool(len(common)) if paired is None else paired
    if is_paired:
        dropped = len(ra.index.union(rb.index)) - len(common)
        if dropped:
            notes.append(f"{dropped} run(s) without both levels left out of the paired test")
        ra, rb = ra.loc[common], rb.loc[common]
    test, stat, run_p = ("wilcoxon" if is_paired else "mannwhitneyu"), math.nan, math.nan
    delta = cliffs_delta(ra.to_numpy(), rb.to_numpy())
    values = np.concatenate([ra.to_numpy(), rb.to_numpy()])
    if min(len(ra), len(rb)) < (2 if is_paired else 1) or len(values) < 3:
        notes.append("too few runs for a run-level test")
        delta = math.nan  # a dominance measure of one or two runs says nothing
    elif np.all(values == values[0]) or (is_paired and np.all(ra.to_numpy() == rb.to_numpy())):
        notes.append("all per-run shares identical: no run-level test")  # scipy would give p = 1 or fail
    elif is_paired:
        res = stats.wilcoxon(ra.to_numpy(), rb.to_numpy())
        stat, run_p = float(res.statistic), float(res.pvalue)
    else:
        res = stats.mannwhitneyu(ra.to_numpy(), rb.to_numpy(), alternative="two-sided")
        stat, run_p = float(res.statistic), float(res.pvalue)
    row = {
        "factor": factor,
        "a": a,
        "b": b,
        "k_a": ka,
        "n_a": na,
        "share_a": sa,
        "k_b": kb,
        "n_b": nb,
        "share_b": sb,
        "diff": sa - sb,
        "odds_ratio": odds,
        "fisher_p": fisher_p,
        "cohens_h": h,
        "h_size": magnitude(h, H_CUTS),
        "paired": is_paired,
        "runs_a": len(ra),
        "runs_b": len(rb),
        "run_test": test,
        "run_stat": stat,
        "run_p": run_p,
        "cliffs_delta": delta,
        "delta_size": magnitude(delta, DELTA_CUTS),
        "note": "; ".join(notes),
    }
    row["verdict"] = _verdict(row, alpha)
    return row


def _fmt_p(p: float) -> str:
    return "n/a" if math.isnan(p) else (f"{p:.2g}" if p >= 1e-4 else "<1e-4")


def _verdict(r: dict[str, Any], alpha: float) -> str:
    """One line: which level has the higher parameter-free share, and how sure the two tests are."""
    a, b, factor = r["a"], r["b"], r["factor"]
    if math.isnan(r["share_a"]) or math.isnan(r["share_b"]):
        return f"cannot compare {factor}={a!r} with {b!r}: {r['note']}"
    evidence = (
        f"({r['share_a']:.2f} vs {r['share_b']:.2f}; pooled Fisher p={_fmt_p(r['fisher_p'])}, "
        f"h={r['cohens_h']:.2f}; per-run {r['run_test']} p={_fmt_p(r['run_p'])}, "
        f"Cliff's delta={r['cliffs_delta']:.2f}, {r['runs_a']} vs {r['runs_b']} runs"
        + (f"; {r['note']})" if r["note"] else ")")
    )
    pooled, per_run = r["fisher_p"] < alpha, r["run_p"] < alpha
    higher, lower = (a, b) if r["diff"] > 0 else (b, a)
    if pooled and per_run:
        return f"{factor}={higher!r} has a higher parameter-free share than {lower!r} {evidence}"
    if pooled and math.isnan(r["run_p"]):
        return f"{factor}={higher!r} looks higher than {lower!r} on pooled choices only {evidence}"
    if pooled:
        return (
            f"{factor}={higher!r} is higher than {lower!r} on pooled choices but not consistently across "
            f"runs {evidence}"
        )
    if per_run:
        return f"{factor}={higher!r} is higher than {lower!r} across runs {evidence}"
    return f"no clear difference between {factor}={a!r} and {b!r} {evidence}"


def collapse_summary(
    summary: pd.DataFrame, by: Sequence[str] = ("strategy", "alpha_mode", "setting")
) -> pd.DataFrame:
    """Share of runs flagged as collapsed per group: ``runs``, ``flagged``, ``share``, Wilson ``ci_low``/
    ``ci_high``, and ``complete_runs``. Takes :func:`pflnas.analysis.summary_frame` output."""
    by = [c for c in by if c in summary.columns]
    cols = [*by, "runs", "flagged", "share", "ci_low", "ci_high", "complete_runs"]
    groups = summary.groupby(by, sort=True, dropna=False) if by else [((), summary)]
    rows = []
    for key, df in groups:
        key = key if isinstance(key, tuple) else (key,)
        k, n = int(df["collapse_flagged"].astype(bool).sum()), len(df)
        low, high = wilson_interval(k, n)
        rows.append(
            {
                **dict(zip(by, key)),
                "runs": n,
                "flagged": k,
                "share": k / n if n else math.nan,
                "ci_low": low,
                "ci_high": high,
                "complete_runs": int(df["complete"].astype(bool).sum()),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def pareto_mask(
    df: pd.DataFrame, x: str, y: str, minimize_x: bool = True, maximize_y: bool = True
) -> pd.Series:
    """True for the rows no other row dominates (at least as good in both ``x`` and ``y``, better in one).

    Rows with NaN in ``x`` or ``y`` are never on the front.
    """
    xs = df[x].to_numpy(dtype=float) * (1 if minimize_x else -1)
    ys = df[y].to_numpy(dtype=float) * (-1 if maximize_y else 1)  # both now "smaller is better"
    ok = ~(np.isnan(xs) | np.isnan(ys))
    front = np.zeros(len(df), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (xs <= xs[i]) & (ys <= ys[i]) & ((xs < xs[i]) | (ys < ys[i]))
        front[i] = not dominated.any()
    return pd.Series(front, index=df.index, name="pareto")
