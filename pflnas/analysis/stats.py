"""How often do parameter-free ops win: run-level shares against chance, collapse rates, Pareto fronts.

The run is the unit of replication: the headline share is the mean of per-run shares with a t-interval
over runs, set against the chance rate of the same choices (:mod:`pflnas.arch.chance`). The pooled
per-edge count and its Wilson interval stay as a labelled secondary view; a bootstrap over runs is given
only from :data:`~pflnas.analysis.inference.MIN_BOOT_RUNS` runs on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from pflnas.analysis.inference import (
    MIN_BOOT_RUNS,
    detectable_difference,
    holm,
    one_sample_p,
    t_interval,
)
from pflnas.arch.chance import SITE_FIELDS, run_chance

SHARE_COLUMNS = [
    *["runs", "share", "ci_low", "ci_high", "chance", "excess", "p_chance", "p_holm", "detectable"],
    *["verdict", "k", "n", "pooled_share", "wilson_low", "wilson_high", "boot_low", "boot_high"],
    *["pf_mass", "pf_mass_low", "pf_mass_high"],
]
H_CUTS = (0.2, 0.5, 0.8)  # Cohen's h: small, medium, large (Cohen 1988)
DELTA_CUTS = (0.147, 0.33, 0.474)  # Cliff's delta: small, medium, large (Romano et al. 2006)
ChanceFn = Callable[[str, Mapping[str, Any]], float]  # (run_id, site fields of the group) -> chance


def wilson_interval(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n``; ``(nan, nan)`` when ``n == 0``."""
    if n <= 0:
        return math.nan, math.nan
    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    # exact bounds at the edges (the formula leaves rounding residue such as 1e-17 at k = 0)
    return (0.0 if k <= 0 else max(0.0, float(low))), (1.0 if k >= n else min(1.0, float(high)))


def counted(choices: pd.DataFrame) -> pd.DataFrame:
    """The choices that count towards shares: every op but ``none``."""
    return choices[~choices["is_zero"].astype(bool)]


def per_run(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run of counted choices: ``k`` parameter-free of ``n``, ``share``, mean ``mass``."""
    g = counted(df).groupby("run_id", sort=True)
    out = pd.DataFrame({"k": g["param_free"].sum(), "n": g.size(), "mass": g["pf_mass"].mean()})
    out["share"] = out["k"] / out["n"]
    return out


def chance_from(choices: pd.DataFrame) -> ChanceFn | None:
    """The chance function of a :func:`~pflnas.analysis.choices_frame` (it records each run's space)."""
    keys = choices.attrs.get("chance_keys")
    if not keys:
        return None
    return lambda run_id, where: run_chance(keys[run_id], where) if run_id in keys else math.nan


def _boot_mean(values: np.ndarray, n_boot: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile bootstrap of the mean over runs; NaN under :data:`MIN_BOOT_RUNS` runs."""
    if len(values) < MIN_BOOT_RUNS:
        return math.nan, math.nan
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    res = stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=n_boot,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def share_row(
    df: pd.DataFrame,
    where: Mapping[str, Any] | None = None,
    chance: ChanceFn | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """The :data:`SHARE_COLUMNS` of one group of choices (``none`` rows are dropped here).

    ``where`` holds the group's values of site fields (cell type, stage, ...): the chance rate of each
    run is the rate of exactly those choices of its space and strategy.
    """
    per = per_run(df)
    k, n = int(per["k"].sum()), int(per["n"].sum())
    share, low, high = t_interval(per["share"], level, bounds=(0.0, 1.0))
    site_where = {c: v for c, v in (where or {}).items() if c in SITE_FIELDS}
    run_chances = np.array([chance(r, site_where) if chance else math.nan for r in per.index], dtype=float)
    excess = per["share"].to_numpy(dtype=float) - run_chances
    w_low, w_high = wilson_interval(k, n, 1 - level)
    b_low, b_high = _boot_mean(per["share"].to_numpy(dtype=float), n_boot, seed, level)
    mass, m_low, m_high = t_interval(per["mass"].dropna(), level, bounds=(0.0, 1.0))
    p = one_sample_p(excess, 0.0) if not np.isnan(run_chances).any() else math.nan
    row = {
        "runs": len(per),
        "share": share,
        "ci_low": low,
        "ci_high": high,
        "chance": float(run_chances.mean()) if len(per) else math.nan,
        "excess": float(excess.mean()) if len(per) else math.nan,
        "p_chance": p,
        "p_holm": p,
        "detectable": detectable_difference(float(np.std(excess, ddof=1)) if len(per) > 1 else 0, len(per)),
        "k": k,
        "n": n,
        "pooled_share": k / n if n else math.nan,
        "wilson_low": w_low,
        "wilson_high": w_high,
        "boot_low": b_low,
        "boot_high": b_high,
        "pf_mass": mass,
        "pf_mass_low": m_low,
        "pf_mass_high": m_high,
    }
    row["verdict"] = chance_verdict(row)
    return row


def chance_verdict(row: Mapping[str, Any], alpha: float = 0.05) -> str:
    """Plain words for a share against its chance rate, never stronger than the run-level test; the
    interval and chance rate are in the row's own columns."""
    runs, chance, p = row["runs"], row["chance"], row["p_holm"]
    if runs == 0:
        return "no counted choices"
    if math.isnan(chance):
        return "chance rate unknown"
    if runs < 2:
        return "1 run: cannot be told from chance"
    if math.isnan(p):
        return "no run-level test"
    side = "above" if row["share"] > chance else "below"
    if p < alpha:
        return f"{side} chance ({runs} runs)"
    if row["ci_low"] == row["ci_high"]:  # every run has the same share: only a sign test is possible
        if row["share"] == chance:
            return f"every run exactly at chance ({runs} runs)"
        return (
            f"all {runs} runs {side} chance but with no spread for a t-test; a sign test cannot reach "
            f"p < {2 / 2**runs:.2g} with {runs} runs"
        )
    if not row["ci_low"] <= chance <= row["ci_high"]:
        return (
            f"{side} chance before adjustment only (95% CI excludes chance; p_holm >= {alpha} over this "
            f"report's tests; {runs} runs)"
        )
    detect = row["detectable"]
    power = "" if math.isnan(detect) else f"; detectable at 80% power: ±{detect:.2f}"
    return f"consistent with chance ({runs} runs{power})"


def share_table(
    choices: pd.DataFrame,
    by: Sequence[str] = (),
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    chance: ChanceFn | None = None,
) -> pd.DataFrame:
    """Parameter-free share per group of ``by`` columns (all choices in one row when ``by`` is empty).

    Headline (the run is the unit): ``runs``; ``share`` the mean of per-run shares with its t-interval
    ``ci_low``/``ci_high``; ``chance`` the mean per-run chance rate of the same choices; ``excess`` =
    share - chance; ``p_chance`` a one-sample t-test of per-run excess against 0, ``p_holm`` its Holm
    adjustment across the table's rows; ``detectable`` the smallest excess detectable at 80% power;
    ``verdict`` in words. Secondary, per edge: ``k`` of ``n`` pooled (``pooled_share``, Wilson interval);
    ``boot_low``/``boot_high`` a bootstrap of the mean over runs (NaN under 10 runs); the probability-mass
    view ``pf_mass`` with its t-interval over runs. ``chance`` defaults to the one the choices frame records.
    """
    by = list(by)
    chance = chance or chance_from(choices)
    if not by:
        rows = [share_row(choices, None, chance, n_boot, seed, level)]
    else:
        rows = []
        for key, df in choices.groupby(by, sort=True, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            where = dict(zip(by, key))
            rows.append({**where, **share_row(df, where, chance, n_boot, seed, level)})
    table = pd.DataFrame(rows, columns=[*by, *SHARE_COLUMNS])
    return adjust(table, "p_chance", chance_verdict)


def adjust(table: pd.DataFrame, column: str, verdict: Callable[[Mapping[str, Any]], str]) -> pd.DataFrame:
    """Holm-adjust ``column`` over the table's rows into ``p_holm`` and redo each row's ``verdict``."""
    if table.empty:
        return table
    table = table.copy()
    table["p_holm"] = holm(table[column].tolist())
    table["verdict"] = [verdict(r) for r in table.to_dict("records")]
    return table


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
