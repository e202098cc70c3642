"""Run-level inference: the run (a seed) is the unit of replication, never the edge.

Edges of one run share a supernet and a seed, so they are not independent samples; every interval and test
here takes one number per run. What a handful of runs cannot show is said, not hidden: the smallest
difference detectable at 80% power, and the smallest p-value a rank test can reach with the runs at hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

POWER = 0.8
MIN_BOOT_RUNS = 10  # a percentile bootstrap over fewer runs has too few distinct resamples to cover


def t_interval(
    values: Sequence[float], level: float = 0.95, bounds: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    """Mean and Student-t interval of the mean (clipped to ``bounds``, e.g. (0, 1) for shares, which
    cannot change its coverage); the interval is NaN under 2 values."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, low, high


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Difference of means ``mean(a) - mean(b)`` with its Welch-Satterthwaite interval (NaN if undefined)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan, math.nan
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df) * se)
    return diff, diff - half, diff + half


def one_sample_p(values: Sequence[float], null: float) -> float:
    """Two-sided one-sample t-test p of ``mean(values) == null``; NaN under 2 values.

    Runs without any spread have no t statistic: then the exact sign test decides (all runs on one side of
    ``null``: ``2 / 2**n``; all at ``null``: 1).
    """
    x = np.asarray(values, dtype=float)
    if len(x) < 2 or math.isnan(null):
        return math.nan
    if np.ptp(x) == 0:
        return 1.0 if x[0] == null else min_p_rank(len(x))
    return float(stats.ttest_1samp(x, null).pvalue)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2 or np.ptp(np.concatenate([a, b])) == 0:
        return math.nan
    if a.var() == 0 and b.var() == 0:
        return math.nan
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """Smallest true mean difference a two-sided one-sample / paired t-test detects with ``power``,
    given the observed between-run SD (so itself an estimate); NaN under 2 runs or with no spread."""
    if n < 2 or not sd > 0:
        return math.nan
    d = TTestPower().solve_power(nobs=n, alpha=alpha, power=power, alternative="two-sided")
    return float(d * sd)


def detectable_difference_two(sd: float, n_a: int, n_b: int, alpha: float = 0.05) -> float:
    """As :func:`detectable_difference` for two independent groups of runs with pooled SD ``sd``."""
    if n_a < 2 or n_b < 2 or not sd > 0:
        return math.nan
    d = TTestIndPower().solve_power(nobs1=n_a, ratio=n_b / n_a, alpha=alpha, power=POWER)
    return float(d * sd)


def pooled_sd(a: Sequence[float], b: Sequence[float]) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return float(
        math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    )


def min_p_rank(n_a: int, n_b: int | None = None) -> float:
    """The smallest two-sided p an exact rank test can give: Mann-Whitney with ``n_a`` vs ``n_b`` runs,
    or the Wilcoxon signed-rank test with ``n_a`` pairs when ``n_b`` is None (3 vs 3 runs: 0.1)."""
    if n_b is None:
        return min(1.0, 2 / 2**n_a) if n_a > 0 else math.nan
    if n_a < 1 or n_b < 1:
        return math.nan
    return min(1.0, 2 / math.comb(n_a + n_b, n_a))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values; NaN entries stay NaN and do not count towards the family size."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), math.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out.tolist()


def fmt_p(p: float) -> str:
    return "n/a" if p is None or math.isnan(p) else ("<0.001" if p < 1e-3 else f"{p:.3f}")
