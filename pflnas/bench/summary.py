"""Summaries of a bench over seeds: the seed is the unit, so every mean comes with its Student-t 95% interval
(one value per seed), and every parameter-free share with its chance rate and a one-sample test against it.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from pflnas.arch.chance import chance_share
from pflnas.bench.nb201 import NB201Stats, NB201Table, nb201_string
from pflnas.bench.runner import ONESHOT_SELECTION, oneshot_images
from pflnas.bench.selection import selection_label
from pflnas.bench.zero_cost import QUALITY_CELLS, QUALITY_HOW


def chance_rate(table: NB201Table) -> float:
    """The parameter-free share expected of a uniformly random NB201 cell (exactly 0.5 for its op set)."""
    return chance_share(table.space)


def interval(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, sample SD and Student-t 95% interval of the mean over the non-None values (one per seed)."""
    from pflnas.analysis.inference import t_interval

    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    mean, lo, hi = t_interval(vals)
    return {
        "mean": mean,
        "std": statistics.stdev(vals) if len(vals) > 1 else None,
        "ci95": None if math.isnan(lo) else [lo, hi],
        "n": len(vals),
    }


def share_stats(values: Sequence[float | None], chance: float) -> dict[str, Any]:
    """:func:`interval` of per-seed shares, the chance rate, and the two-sided one-sample t-test p
    against it."""
    from pflnas.analysis.inference import one_sample_p

    out = interval(values)
    p = one_sample_p([v for v in values if v is not None], chance)
    return {**out, "chance": chance, "p_vs_chance": None if math.isnan(p) else p}


def _budget(settings: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    spent = [r.get("budget", {}) for r in results]
    total = {key: sum(b.get(key) or 0 for b in spent) for key in ("queries", "images", "wall_time_s")}
    if settings["kind"] == "multi-trial":
        per_seed = {"queries": settings["queries"], "epochs_per_query": spent[0].get("epochs_per_query")}
    else:
        config = settings["config"]
        per_seed = {"epochs": config["run"]["epochs"], "images": oneshot_images(config)}
    return {"per_seed": per_seed, "total": total}


def summarize(
    table: NB201Table,
    settings: dict[str, Any],
    results: list[dict[str, Any]],
    stats: NB201Stats,
    quality: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The seeds of one strategy and selection: intervals, the budget spent, the anytime regret curve
    (multi-trial), and the zero-cost signal's quality where it was the selection."""
    multi = settings["kind"] == "multi-trial"
    selection = selection_label(settings["signal"]["selection"]) if multi else ONESHOT_SELECTION
    out: dict[str, Any] = {
        "strategy": settings["strategy"],
        "kind": settings["kind"],
        "selection": selection,
        "seeds": [r["seed"] for r in results],
        "accuracy": interval([r["accuracy"] for r in results]),
        "regret": interval([r["regret"] for r in results]),
        "param_free_share": share_stats([r["param_free_share"] for r in results], chance_rate(table)),
        "top_param_free_share": stats.top_param_free_share,
        "wall_time_s": interval([r.get("wall_time_s") for r in results]),
        "budget": _budget(settings, results),
        "settings": json.loads(json.dumps(settings)),
    }
    if multi and settings["signal"]["selection"] == "zero-cost":
        out["signal_quality"] = quality_entry(quality)
    if multi:
        out["anytime"] = _anytime(table, [r["curve"] for r in results])
    out["runs"] = results
    return out


def quality_entry(quality: dict[str, Any] | None) -> dict[str, Any]:
    """The zero-cost quality as every output names it: the measured tau, or how to measure it."""
    if quality is None:
        return {"kendall_tau": None, "measured": False, "how": f"{QUALITY_HOW} ({QUALITY_CELLS} cells)"}
    return {"measured": True, **quality}


def _anytime(table: NB201Table, curves: list[list[float]]) -> dict[str, Any]:
    n = min(len(c) for c in curves)
    regret = table.best_accuracy() - np.array([c[:n] for c in curves])
    rows = [interval(list(regret[:, q])) for q in range(n)]
    return {
        "queries": list(range(1, n + 1)),
        "regret_mean": [r["mean"] for r in rows],
        "regret_ci95": [r["ci95"] for r in rows],
    }


# --- markdown ---------------------------------------------------------------------------------------------
def _ci(stat: dict[str, Any], fmt: str) -> str:
    if stat["mean"] is None:
        return "n/a"
    text = format(stat["mean"], fmt)
    if stat.get("ci95"):
        lo, hi = stat["ci95"]
        text += f" [{format(lo, fmt)}, {format(hi, fmt)}]"
    return text


def _budget_text(s: dict[str, Any]) -> str:
    per = s["budget"]["per_seed"]
    if s["kind"] == "multi-trial":
        epochs = per.get("epochs_per_query") or 0
        return f"{per['queries']} queries" + (f" x {epochs} epochs" if epochs else "")
    return f"{per['epochs']} epochs ({per['images']:,} images)"


def _p(value: float | None) -> str:
    return "n/a" if value is None else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def quality_line(quality: dict[str, Any]) -> str:
    if not quality.get("measured"):
        return f"zero-cost signal quality: not measured; measure it with `{quality['how']}`"
    cfg = quality["score_settings"]
    return (
        f"zero-cost signal ({cfg['score']}: batch of {cfg['batch_size']} training images, untrained network "
        f"C={cfg['init_channels']}, {cfg['layers']} cell(s) per stage): "
        f"Kendall tau {quality['kendall_tau']:.3f} "
        f"against the table's accuracy over {quality['cells']} sampled cells (seed {quality['sample_seed']})"
    )


def markdown_table(summaries: list[dict[str, Any]], table: NB201Table, stats: NB201Stats) -> str:
    """The per-strategy table (means with t-intervals over seeds, chance beside every share), the table's
    facts above it, and the anytime regret below."""
    best_arch, best = table.best()
    lines = [
        f"NAS-Bench-201, CIFAR-10 test accuracy ({table.metric}, analog-nasbench): {stats.cells} cells, "
        f"best {best:.2f} `{nb201_string(best_arch)}`; best {stats.top_fraction:.0%} = {stats.top_cells} "
        f"cells >= {stats.top_threshold:.2f}, their parameter-free share {stats.top_param_free_share:.3f} "
        f"(chance {chance_rate(table):.2f})",
        "",
        "| strategy | selection | seeds | budget / seed | test accuracy (%) | regret (pp) "
        "| parameter-free share | chance | p vs chance | share in best 1% | wall time / seed (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summaries:
        share = s["param_free_share"]
        lines.append(
            f"| {s['strategy']} | {s['selection']} | {len(s['seeds'])} | {_budget_text(s)} "
            f"| {_ci(s['accuracy'], '.2f')} | {_ci(s['regret'], '.2f')} | {_ci(share, '.3f')} "
            f"| {share['chance']:.2f} | {_p(share['p_vs_chance'])} | {s['top_param_free_share']:.3f} "
            f"| {_ci(s['wall_time_s'], '.1f')} |"
        )
    lines.append("")
    lines.append(
        "Means over seeds with Student-t 95% intervals [low, high]; p: two-sided one-sample t-test of the"
    )
    lines.append("per-seed shares against chance.")
    qualities = {json.dumps(s["signal_quality"], sort_keys=True) for s in summaries if "signal_quality" in s}
    lines += ["", *(quality_line(json.loads(q)) for q in sorted(qualities))] if qualities else []
    return "\n".join(lines + _anytime_lines(summaries)) + "\n"


def _anytime_lines(summaries: list[dict[str, Any]]) -> list[str]:
    anytime = [s for s in summaries if "anytime" in s]
    if not anytime:
        return []
    n = min(len(s["anytime"]["queries"]) for s in anytime)
    marks = sorted({q for q in (1, 10, 25, 50, 100, 200, 500, 1000) if q <= n} | {n})
    lines = [
        "",
        "Anytime regret (pp; mean [t-interval] over seeds) of the cell the selection signal ranks best after",
        "N queries:",
        "",
        "| strategy | selection | " + " | ".join(f"N={q}" for q in marks) + " |",
        "| --- | --- |" + " --- |" * len(marks),
    ]
    for s in anytime:
        a = s["anytime"]
        cells = [
            _ci({"mean": a["regret_mean"][q - 1], "ci95": a["regret_ci95"][q - 1]}, ".2f") for q in marks
        ]
        lines.append(f"| {s['strategy']} | {s['selection']} | " + " | ".join(cells) + " |")
    return lines
