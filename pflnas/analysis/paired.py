"""Paired differences with the seed as the unit of replication (the swap study's statistics).

Each seed gives one difference (e.g. counterfactual minus original accuracy, both trained with that seed).
The headline is the mean difference with a t-interval over seeds; the paired t-test gives p (Holm-adjusted
over a report's rows by the caller), the exact Wilcoxon signed-rank test is the rank-based check, and two
numbers say what the seeds at hand can show at all: the smallest Wilcoxon p attainable (2 / 2^n) and the
smallest true difference a paired t-test detects with 80% power at the observed SD
(:mod:`pflnas.analysis.inference`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from pflnas.analysis.inference import detectable_difference, min_p_rank, one_sample_p, t_interval

ALPHA = 0.05


@dataclass(frozen=True)
class Paired:
    """Summary of ``n`` paired differences; NaN where ``n`` is too small for the quantity."""

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    t_p: float
    wilcoxon_p: float
    min_wilcoxon_p: float
    mdd80: float  # smallest true mean difference detectable at 80% power (paired t, two-sided, alpha 0.05)


def _wilcoxon(d: np.ndarray) -> float:
    if d.size < 2:
        return math.nan
    if not np.any(d):
        return 1.0
    with warnings.catch_warnings():  # ties and zeros switch scipy to the normal approximation, loudly
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(d, alternative="two-sided").pvalue)


def paired_summary(diffs: Sequence[float]) -> Paired:
    """Mean, 95% t-interval, paired t and Wilcoxon p, the smallest attainable Wilcoxon p and the
    80%-power detectable difference of ``diffs`` (one per seed; NaNs are dropped)."""
    d = np.asarray([x for x in diffs if not math.isnan(x)], dtype=float)
    n = int(d.size)
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    mean, low, high = t_interval(d, 1 - ALPHA)
    return Paired(
        n,
        mean,
        sd,
        low,
        high,
        one_sample_p(d, 0.0),
        _wilcoxon(d),
        min_p_rank(n),
        detectable_difference(sd, n, ALPHA),
    )


def verdict(s: Paired, p_holm: float, above: str, below: str, unit: str = "pp") -> str:
    """One line that claims no more than the interval. ``above`` / ``below`` say what a difference above or
    below zero means; an interval that excludes 0 is qualified when Holm's p is not under 0.05."""
    if s.n == 0:
        return "no complete pair"
    if s.n == 1:
        return f"one seed ({s.mean:+.2f} {unit}): no interval, no test; add seeds"
    ci = f"95% CI [{s.ci_low:+.2f}, {s.ci_high:+.2f}] {unit}, n={s.n} seeds"
    if math.isnan(s.ci_low) or s.ci_low <= 0 <= s.ci_high:
        power = f"; 80% power only for |Δ| ≥ {s.mdd80:.2f} {unit}" if not math.isnan(s.mdd80) else ""
        return f"no detectable difference ({ci}{power})"
    side = above if s.ci_low > 0 else below
    if not p_holm < ALPHA:
        return f"{side} by this interval ({ci}), but not after Holm's correction (p_holm {p_holm:.3f})"
    return f"{side} ({ci})"
