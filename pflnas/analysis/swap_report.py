"""The report of swap studies: found architectures against single-choice counterfactuals, paired by seed.

Every number comes from the run directories (:func:`pflnas.study.swap.swap_results`). Accuracy is the top-1
of the final epoch on the test split (never the best epoch: nothing is selected on the reported number).
The seed is the unit: per swap one difference per seed, and the pooled rows average over swaps within a
seed first (:mod:`pflnas.analysis.paired`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from pflnas.analysis.figures import PARAM_FREE_ACCENT, TRAINABLE_ACCENT, new_figure
from pflnas.analysis.inference import holm
from pflnas.analysis.paired import Paired, paired_summary, verdict
from pflnas.analysis.report_page import Report, joined_paths, write_page
from pflnas.analysis.report_parts import Writer, fmt_p, md_code, md_code_block, md_table, md_text
from pflnas.config.loader import build_config, read_yaml, to_dict
from pflnas.errors import PflnasError
from pflnas.parsing import load_yaml
from pflnas.train.recipe import RetrainConfig, recipe_layer

# the full-budget recipe a dataset and op context is compared with in the protocol section
REFERENCE = {
    ("cifar10", "cell"): "cifar10_darts",
    ("imagenet", "cell"): "imagenet_darts_mobile",
    ("imagenet", "bottleneck"): "imagenet_resnet_90ep",
    ("imagenet", "token"): "imagenet_deit",
}
SWAP_COLUMNS = {
    "arch": "architecture",
    "label": "choice",
    "old_op": "pick",
    "new_op": "counterfactual",
    "family": "pick is",
    "probs": "final prob. pick / cf",
    "seeds": "seeds",
    "mean_pp": "mean Δ top-1 (pp)",
    "ci": "95% CI (pp)",
    "t_p": "paired t p",
    "p_holm": "p_holm",
    "wilcoxon_p": "Wilcoxon p",
    "min_wilcoxon_p": "min Wilcoxon p",
    "mdd80_pp": "80%-power Δ (pp)",
    "d_params": "Δ params",
    "d_macs": "Δ MACs",
    "d_latency_ms": "Δ latency (ms)",
    "verdict": "verdict",
}
POOLED_COLUMNS = {
    "comparison": "comparison",
    "swaps": "swaps",
    **{k: SWAP_COLUMNS[k] for k in ("seeds", "mean_pp", "ci", "t_p", "p_holm", "wilcoxon_p")},
    **{k: SWAP_COLUMNS[k] for k in ("min_wilcoxon_p", "mdd80_pp", "verdict")},
}
RUN_COLUMNS = {
    "name": "run",
    "seed": "seed",
    "epochs": "epochs",
    "top1": "top-1 (final epoch)",
    "params": "params",
    "macs": "MACs",
    "latency_ms": "latency ms (batch 1)",
}


def _num(fmt: str) -> Any:
    return lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


FORMATS = {
    "mean_pp": _num("+.2f"),
    "mdd80_pp": _num(".2f"),
    "d_params": _num("+,.0f"),
    "d_macs": _num("+,.0f"),
    "d_latency_ms": _num("+.3f"),
    **{k: fmt_p for k in ("t_p", "p_holm", "wilcoxon_p", "min_wilcoxon_p")},
}
POOLED = (
    ("parameter-free picks vs their trainable counterfactuals", True),
    ("trainable picks vs their parameter-free counterfactuals", False),
    ("all picks vs their counterfactuals", None),
)


def is_swap_study(path: Path) -> bool:
    """A ``kind: swap`` study directory (see :mod:`pflnas.study.swap`)."""
    try:
        return read_yaml(path / "study.yaml").get("kind") == "swap"
    except (PflnasError, OSError):
        return False


def paired_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per swap and seed with both networks complete: accuracy (pp), params, MACs and latency
    differences, counterfactual minus original."""
    orig = runs[runs["swap"] == "orig"].set_index(["study", "arch", "seed"])
    rows = []
    for _, cf in runs[runs["swap"] != "orig"].iterrows():
        key = (cf["study"], cf["arch"], cf["seed"])
        if key not in orig.index:
            continue
        o = orig.loc[key]
        rows.append(
            {
                **{k: cf[k] for k in ("study", "arch", "swap", "label", "old_op", "new_op", "stride")},
                **{k: cf[k] for k in ("rule", "p_old", "p_new", "seed")},
                "param_free_pick": bool(cf["param_free_pick"]),
                "top1_orig": o["top1"],
                "top1_cf": cf["top1"],
                "delta_pp": 100 * (cf["top1"] - o["top1"]),
                "d_params": cf["params"] - o["params"],
                "d_macs": cf["macs"] - o["macs"],
                "d_latency_ms": cf["latency_ms"] - o["latency_ms"],
            }
        )
    return pd.DataFrame(rows)


def _stats_row(s: Paired) -> dict[str, Any]:
    return {
        "seeds": s.n,
        "mean_pp": s.mean,
        "ci_low": s.ci_low,
        "ci_high": s.ci_high,
        "t_p": s.t_p,
        "wilcoxon_p": s.wilcoxon_p,
        "min_wilcoxon_p": s.min_wilcoxon_p,
        "mdd80_pp": s.mdd80,
    }


def swap_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per swap: the paired statistics of its per-seed differences, Holm over all swaps, cost deltas and
    a verdict."""
    rows, sums = [], []
    keys = ["study", "arch", "swap", "label", "old_op", "new_op", "stride", "param_free_pick", "rule"]
    keys += ["p_old", "p_new"]
    for key, g in pairs.groupby(keys, sort=False, dropna=False):
        s = paired_summary(g.sort_values("seed")["delta_pp"].tolist())
        sums.append(s)
        costs = {c: g[c].median() for c in ("d_params", "d_macs", "d_latency_ms")}
        rows.append({**dict(zip(keys, key)), **_stats_row(s), **costs})
    out = pd.DataFrame(rows)
    out["p_holm"] = holm([s.t_p for s in sums])
    out["verdict"] = [
        verdict(s, p, "counterfactual more accurate", "original pick more accurate")
        for s, p in zip(sums, out["p_holm"])
    ]
    return out


def pooled_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Pick minus counterfactual, averaged over the swaps of each seed first (the seed is the unit), for
    parameter-free picks, trainable picks and all; Holm over these rows."""
    rows, sums = [], []
    for what, family in POOLED:
        g = pairs if family is None else pairs[pairs["param_free_pick"] == family]
        if g.empty:
            continue
        per_seed = (-g.groupby("seed")["delta_pp"].mean()).sort_index()
        s = paired_summary(per_seed.tolist())
        sums.append(s)
        swaps = len(g.groupby(["study", "arch", "swap"]))
        rows.append({"comparison": what, "picks": family, "swaps": swaps, **_stats_row(s)})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = holm([s.t_p for s in sums])
    out["verdict"] = [
        verdict(s, p, "the picks more accurate", "the counterfactuals more accurate")
        for s, p in zip(sums, out["p_holm"])
    ]
    return out


def plot_paired_differences(summary: pd.DataFrame, pairs: pd.DataFrame, pooled: pd.DataFrame) -> Figure:
    """Per swap (counterfactual minus original) and pooled (pick minus counterfactual): each seed's
    difference as a dot, the mean with its 95% t-interval as a bar (an open marker: one seed, no interval)."""
    heights = [max(len(summary), 1), max(len(pooled), 1)]
    fig, axes = new_figure(
        2, 1, figsize=(8, 0.45 * sum(heights) + 2.0), gridspec_kw={"height_ratios": heights}
    )
    panels = (
        (axes[0, 0], summary, "top-1 difference, counterfactual − original (pp)"),
        (axes[1, 0], pooled, "top-1 difference, pick − counterfactual (pp), seed means"),
    )
    for ax, table, xlabel in panels:
        for y, (_, r) in enumerate(table.iterrows()):
            pick = r.get("param_free_pick", r.get("picks"))
            color = TRAINABLE_ACCENT if pick is False else PARAM_FREE_ACCENT if pick else "#444444"
            if "swap" in r:
                same = (pairs["study"] == r["study"]) & (pairs["arch"] == r["arch"])
                dots = pairs[same & (pairs["swap"] == r["swap"])]["delta_pp"]
                ax.scatter(dots, [y] * len(dots), s=14, color=color, alpha=0.45, zorder=2)
            if math.isnan(r["ci_low"]):
                ax.plot(r["mean_pp"], y, "o", mfc="white", color=color, zorder=3)
            else:
                err = [[r["mean_pp"] - r["ci_low"]], [r["ci_high"] - r["mean_pp"]]]
                ax.errorbar(r["mean_pp"], y, xerr=err, fmt="o", color=color, capsize=3, zorder=3)
        labels = [_row_label(r) for _, r in table.iterrows()]
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel(xlabel)
    axes[0, 0].set_title("blue: parameter-free picks, red: trainable picks", fontsize=9)
    return fig


def _row_label(r: pd.Series) -> str:
    if "swap" not in r:
        return str(r["comparison"])
    return f"{r['arch']}: {r['label']} {r['old_op']}→{r['new_op']}"


def _shown(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its interval as one text column (and the pick's family, for swap rows)."""
    ci = [
        "–" if math.isnan(a) else f"[{a:+.2f}, {b:+.2f}]" for a, b in zip(table["ci_low"], table["ci_high"])
    ]
    out = table.assign(ci=ci)
    if "param_free_pick" in out:
        out["family"] = ["parameter-free" if p else "trainable" for p in out["param_free_pick"]]
        probs = zip(out["p_old"], out["p_new"])
        out["probs"] = ["–" if pd.isna(a) or pd.isna(b) else f"{a:.3f} / {b:.3f}" for a, b in probs]
    return out


def _protocol(sources: Sequence[Path], runs: pd.DataFrame, study: dict[str, Any]) -> list[str]:
    """What every retrain did, and how it differs from the full-budget recipe of its dataset."""
    first = runs.iloc[0]
    folder = next(s for s in sources if s.name == first["study"]) / "runs" / first["name"] / "retrain"
    config = load_yaml(folder / "config.yaml", "retrain config") or {}
    net = config.pop("network", None) or {}
    d, sched = config.get("data", {}), config.get("schedule", {})
    retrain = study.get("retrain", {})
    images = f"a subset of {d['subset']:,} training images" if d.get("subset") else "the full training split"
    t = md_text  # the recipe, its overrides and the study's values are the user's
    lines = [
        f"- Recipe {md_code(retrain.get('recipe'))} with overrides {md_code(retrain.get('set') or {})}: "
        f"{t(sched.get('epochs'))} epoch(s) on {images} of {t(d.get('dataset'))} (the subset is drawn per "
        f"seed), batch {t(d.get('batch_size'))}, network C={t(net.get('init_channels'))}, "
        f"{t(net.get('layers'))} layers, threads per retrain {t(config.get('run', {}).get('threads'))}.",
        f"- Seeds {t(study.get('seeds'))}: the original and every counterfactual train with each seed (same "
        "training subset, data order and RNG seed), so each seed gives one paired difference.",
        f"- Swaps: {md_code(study.get('swaps'))}, at most {t(study.get('max_swaps') or 'all')} per "
        "architecture, "
        "evenly spaced in network order. The replacement is the most probable op of the other family at that "
        "choice and stride in the found.json's final probabilities (the space's op order without them).",
        "- Accuracy: top-1 on the whole evaluation split (CIFAR: test, ImageNet: val) after the final "
        "epoch. The best epoch is never used, so nothing is selected on the reported number. At this "
        f"budget the networks reach {runs['top1'].min():.1%} to {runs['top1'].max():.1%} "
        f"(chance: {1 / net.get('num_classes', 10):.1%}).",
    ]
    reference = REFERENCE.get((d.get("dataset"), first["context"]))
    return [*lines, "", *_budget_differences(config, reference)]


def _budget_differences(config: dict[str, Any], reference: str | None) -> list[str]:
    """A table of the recipe settings in which the study's retrains differ from the full-budget recipe."""
    if reference is None:
        return ["_No full-budget reference recipe for this dataset and space._"]
    ref = to_dict(build_config(RetrainConfig, [recipe_layer(reference)]))
    diff = pd.DataFrame(
        [
            {"setting": f"{sec}.{k}", "study": config.get(sec, {}).get(k), "full": v}
            for sec in ("model", "data", "optim", "schedule")
            for k, v in ref[sec].items()
            if config.get(sec, {}).get(k) != v and k not in ("data_dir", "workers")
        ]
    )
    if diff.empty:
        return [f"The retrains follow the full-budget recipe `{reference}`."]
    return [
        f"Where this protocol differs from the full-budget recipe `{reference}` (–: the network's default "
        "width or depth, e.g. C=36 and 20 cells for DARTS cells on CIFAR-10). Differences measured under "
        "this protocol need not hold at the full budget:",
        "",
        md_table(diff, {"setting": "setting", "study": "this study", "full": reference}),
    ]


METHODS = (
    "Each swap changes one choice of the found record (a kept edge of one cell group, or one block); with "
    "shared or repeated cells every network cell that reads that record cell changes with it. "
    "Parameter-freeness is the op registry's at the choice's stride (a stride-2 `skip_connect` is a "
    "FactorizedReduce with weights, so it counts as trainable). Per swap, the difference counterfactual "
    "minus original is taken within each seed; the table gives its mean over seeds with a 95% t-interval "
    "(t distribution with n-1 degrees of freedom; none with one seed), the paired t-test p, Holm-adjusted "
    "over all swaps of this report (`p_holm`), the exact Wilcoxon signed-rank p and the smallest p it can "
    "reach with n seeds (2/2^n), and the smallest true difference a paired t-test would detect with 80% "
    "power at the observed SD (statsmodels TTestPower). Verdicts say no more than the interval: 'no "
    "detectable difference' is not evidence of equal accuracy. Pooled rows average pick minus "
    "counterfactual over the swaps of each seed first, so the seed, not the edge, is the unit; Holm runs "
    "over the pooled rows separately. Params and MACs are counted with `pflnas profile`; latency is its "
    "median batch-1 forward time, measured one network at a time after all retrains (median over seeds)."
)


def build_swap_markdown(sources: Sequence[Path], out: Path, title: str) -> tuple[str, Writer, int]:
    """The report of swap studies (figures and CSV tables are written under ``out`` on the way)."""
    from pflnas import __version__
    from pflnas.study.swap import swap_results

    w = Writer(out)
    runs = pd.DataFrame([{**r, "study": s.name} for s in sources for r in swap_results(s)])
    if runs.empty:
        raise PflnasError(
            "no complete run in the swap study yet (each needs retrain/result.json and profile.json)"
        )
    pairs = paired_frame(runs)
    if pairs.empty:
        raise PflnasError("no swap has both its original and its counterfactual complete for some seed yet")
    summary, pooled = swap_summary(pairs), pooled_summary(pairs)
    for frame, name in ((runs, "swap_runs"), (pairs, "swap_pairs"), (summary, "swap_summary")):
        w.csv(frame, name)
    w.csv(pooled, "swap_pooled")
    study = read_yaml(sources[0] / "study.yaml")
    lines = [
        f"# {md_text(title)}",
        "",
        f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by pflnas {__version__}: "
        f"{len(runs)} retrained network(s), {len(summary)} swap(s), from {md_text(joined_paths(sources))}.",
        "",
        "## Protocol",
        "",
        *_protocol(sources, runs, study),
        "",
        "## Paired differences per swap (counterfactual − original, same seed)",
        "",
        md_table(_shown(summary), SWAP_COLUMNS, FORMATS),
        "",
        w.figure(plot_paired_differences(summary, pairs, pooled), "paired_differences", "paired differences"),
        "",
        "## Pooled: picks against their counterfactuals (pick − counterfactual, seed means)",
        "",
        md_table(_shown(pooled), POOLED_COLUMNS, FORMATS),
        "",
        "## Networks",
        "",
        md_table(runs, RUN_COLUMNS),
        "",
    ]
    for src in sources:
        text = (src / "study.yaml").read_text()
        lines += [f"## Study configuration ({md_text(src.name)})", "", *md_code_block(text, "yaml"), ""]
    lines += ["## Methods", "", METHODS, ""]
    return "\n".join(lines), w, len(runs)


def write_swap_report(sources: Sequence[Path], out: Path, title: str) -> Report:
    """Write ``report.md``, ``report.html``, ``figures/`` and ``tables/`` of swap studies into ``out``."""
    others = [str(p) for p in sources if not is_swap_study(p)]
    if others:
        raise PflnasError(f"report swap studies apart from other runs ({', '.join(others)} is no swap study)")
    text, writer, n = build_swap_markdown(sources, out, title)
    md_path, html_path = write_page(out, text, title)
    return Report(out, md_path, html_path, writer.figures, writer.tables, n, n)
