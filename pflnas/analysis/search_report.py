"""The report of search runs: run-level shares against chance, comparisons, breakdowns, collapse, protocol.

Every p-value of one report is Holm-adjusted with all the others (``p_holm``), and every verdict is read
from the adjusted value. The run is the unit; per-edge pooled views are kept, labelled as such.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pflnas.analysis.compare import compare, compare_verdict
from pflnas.analysis.frames import choices_frame, summary_frame, trajectory_frame
from pflnas.analysis.inference import holm
from pflnas.analysis.load import DAMAGED, RunData
from pflnas.analysis.plots import (
    draw_architecture,
    plot_op_frequency,
    plot_probability_heatmap,
    plot_share_bars,
    plot_trajectories,
)
from pflnas.analysis.protocol import protocol_table
from pflnas.analysis.report_parts import (
    Writer,
    fmt,
    fmt_interval,
    fmt_p,
    md_code,
    md_code_block,
    md_table,
    md_text,
)
from pflnas.analysis.stats import chance_verdict, collapse_summary, share_table
from pflnas.errors import PflnasError

MAX_DRAWN_RUNS = 12
NEAR_UNIFORM = 0.99  # mean normalised entropy of final weights above which argmax choices are fragile
METHODS = (
    "**Unit.** The run (one seed) is the unit of replication. A run's share is the fraction of its chosen "
    "ops (kept edges of derived cells, or block choices) that are parameter-free at their stride; `none` "
    "edges count for neither side. The headline share is the mean of per-run shares with a Student-t 95% "
    "interval over runs. **Chance** is the share expected when the architecture weights are uniformly "
    "random, for the same space, α mode, cell type / stage / position and the strategy's derivation rule, "
    "computed exactly (DARTS: each node keeps 2 of its incoming edges uniformly, each a uniform non-`none` "
    "op; NB201: a uniform op per edge; blocks: a uniform op valid at the block's stride). *vs chance*: a "
    "one-sample t-test of per-run (share − chance). **Comparisons** test per-run (share − chance) between "
    "two levels: a paired t-test when both occur in the same runs (normal vs reduction cells), Welch's "
    "t-test otherwise, with a t-interval of the difference; rank tests (Wilcoxon / Mann-Whitney, with "
    "Cliff's δ) are shown with the smallest p they can reach with those runs. The α-mode comparison is made "
    "per cell type (and over all, on chance-adjusted shares), because the two modes mix cell types "
    "differently. **Multiplicity**: every p-value in this report is Holm-adjusted together (`p_holm`); "
    "verdicts use `p_holm` at 0.05. **Power**: *detectable* is the smallest difference a t-test would find "
    "with 80% power at the observed between-run SD. **Secondary, per edge**: pooled counts with Wilson "
    "intervals, Fisher's exact test (Cochran-Mantel-Haenszel over cell types for α modes); these treat "
    "edges of one run as independent, which they are not. A bootstrap over runs is shown only from 10 "
    "runs on. **Collapse** counts parameter-free skips only (stride-1 identities), normal and reduction "
    "cells apart; a run is flagged when its last epoch crosses its config's thresholds."
)


def _share_md(table: pd.DataFrame, by: list[str]) -> str:
    t = table.assign(
        ci=[fmt_interval(a, b) for a, b in zip(table["ci_low"], table["ci_high"])],
    )
    cols = {c: c.replace("_", " ") for c in by}
    cols.update(
        {
            "runs": "runs",
            "share": "share (mean of runs)",
            "ci": "95% CI (runs)",
            "chance": "chance",
            "excess": "share − chance",
            "p_holm": "p_holm vs chance",
            "verdict": "verdict",
        }
    )
    return md_table(t, cols, {"p_holm": fmt_p})


def _edge_md(table: pd.DataFrame, by: list[str]) -> str:
    t = table.assign(
        wilson=[fmt_interval(a, b) for a, b in zip(table["wilson_low"], table["wilson_high"])],
        boot=[fmt_interval(a, b) for a, b in zip(table["boot_low"], table["boot_high"])],
        mass=[f"{fmt(m)} {fmt_interval(a, b)}" for m, a, b in zip(*(table[c] for c in _MASS))],
    )
    cols = {c: c.replace("_", " ") for c in by}
    cols.update(
        {
            "k": "param-free",
            "n": "chosen",
            "pooled_share": "pooled share",
            "wilson": "95% Wilson (per edge)",
            "boot": "95% bootstrap (runs, ≥10)",
            "chance": "chance",
            "mass": "mass (95% CI, runs)",
        }
    )
    return md_table(t, cols)


_MASS = ("pf_mass", "pf_mass_low", "pf_mass_high")


def _compare_md(rows: pd.DataFrame) -> str:
    t = rows.assign(
        shares=[f"{fmt(x)} / {fmt(y)}" for x, y in zip(rows["share_a"], rows["share_b"])],
        chances=[f"{fmt(x)} / {fmt(y)}" for x, y in zip(rows["chance_a"], rows["chance_b"])],
        ci=[fmt_interval(a, b) for a, b in zip(rows["diff_low"], rows["diff_high"])],
    )
    cols = {
        "what": "comparison",
        "shares": "shares (a / b)",
        "chances": "chance (a / b)",
        "excess_diff": "Δ (share − chance)",
        "ci": "95% CI",
        "test": "test",
        "p_holm": "p_holm",
        "min_rank_p": "min rank p",
        "edge_p": "per-edge p",
        "verdict": "verdict",
    }
    return md_table(t, cols, {"p_holm": fmt_p, "edge_p": fmt_p, "min_rank_p": fmt_p})


def _comparisons(choices: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    """Every comparison the runs allow; α modes per cell type and over all (CMH per edge)."""
    plan: list[tuple[str, Any, Any, list[str], str | None]] = []
    plan.append(("cell_type", "normal", "reduce", [g for g in groups if g != "cell_type"], None))
    if set(choices["alpha_mode"]) >= {"individual", "shared"}:
        rest = [g for g in groups if g != "alpha_mode"]
        plan.append(("alpha_mode", "individual", "shared", [*rest, "cell_type"], None))
        plan.append(("alpha_mode", "individual", "shared", rest, "cell_type"))
    if "random" in set(choices["strategy"]):
        for s in sorted(set(choices["strategy"]) - {"random"}):
            plan.append(("strategy", s, "random", [g for g in groups if g != "strategy"], None))
    settings = list(dict.fromkeys(choices["setting"]))
    for other in settings[1:]:
        plan.append(("setting", settings[0], other, [g for g in groups if g != "setting"], None))
    frames = []
    for factor, a, b, by, strata in plan:
        if not ({a, b} <= set(choices[factor])):
            continue
        rows = compare(choices, factor, a, b, by=by or None, strata=strata)
        rows = rows[(rows["n_a"] > 0) & (rows["n_b"] > 0)]  # groups holding only one of the two levels
        if rows.empty:
            continue
        suffix = " (all cell types, chance-adjusted)" if strata else ""
        rows = rows.assign(
            what=[
                f"{factor}: {a} vs {b}{suffix}"
                + (" (" + ", ".join(f"{k}={r[k]}" for k in by) + ")" if by else "")
                for _, r in rows.iterrows()
            ]
        )
        frames.append(rows)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def holm_across(tables: list[tuple[pd.DataFrame, str, Callable[[Any], str]]]) -> None:
    """Holm-adjust the p-values of all ``(table, p column, verdict)`` together, in place."""
    pvalues = [p for t, col, _ in tables for p in t[col].tolist()] if tables else []
    adjusted = iter(holm(pvalues))
    for table, _, verdict in tables:
        table["p_holm"] = [next(adjusted) for _ in range(len(table))]
        table["verdict"] = [verdict(r) for r in table.to_dict("records")]


def _runs_md(summary: pd.DataFrame, runs: list[RunData]) -> str:
    device = {r.run_id: (r.arch.provenance.get("device") if r.arch else None) for r in runs}
    t = summary.assign(
        device=[device.get(i) for i in summary["run_id"]],
        flag=["yes" if f else "" for f in summary["collapse_flagged"]],
        wall=[fmt(w, 0) + " s" if pd.notna(w) else "–" for w in summary["wall_time_s"]],
    )
    cols = {
        "run_id": "run",
        "strategy": "strategy",
        "alpha_mode": "α",
        "setting": "setting",
        "seed": "seed",
        "epochs": "epochs",
        "val_acc": "val acc",
        "param_free_share": "param-free share",
        "skip_count_normal": "skips (normal)",
        "skip_count_reduce": "skips (reduce)",
        "flag": "collapse?",
        "wall": "wall time",
        "device": "device",
        "complete": "complete",
    }
    return md_table(t, cols)


def _breakdowns(choices: pd.DataFrame, groups: list[str]) -> list[tuple[str, str, pd.DataFrame]]:
    out = []
    for column, heading in (("stage", "By stage"), ("position", "By node position (cells) / block index")):
        known = choices[choices[column].notna()]
        if not known.empty:
            out.append((column, heading, share_table(known, by=[*groups, "cell_type", column])))
    return out


def _limits(
    headline: pd.DataFrame, comparisons: pd.DataFrame, protocol: pd.DataFrame, summary: pd.DataFrame
) -> list[str]:
    """What these runs cannot show: run counts, power, rank-test floors, budget, near-uniform weights."""
    lines = [
        f"- Runs per group: {_span(headline['runs'])}. The shares of one run are one observation: "
        "intervals and tests use runs, not edges."
    ]
    detect = headline["detectable"].dropna()
    if not detect.empty:
        lines.append(
            f"- With these runs, only differences from chance of about {_span(detect, '.2f')} or more would "
            "be detected with 80% power (t-test at the observed between-run SD)."
        )
    if headline["runs"].min() < 2:
        lines.append("- Groups with 1 run have no interval and no test: they cannot be told from chance.")
    if not comparisons.empty:
        floor = comparisons["min_rank_p"].dropna()
        if not floor.empty and floor.max() > 0.05:
            lines.append(
                f"- Rank tests cannot reach p < 0.05 in some comparisons (smallest attainable p up to "
                f"{floor.max():.2g}): more runs are needed before their verdicts can change."
            )
    uniform = summary.loc[summary["complete"].astype(bool), "norm_entropy"].dropna()
    if not uniform.empty and uniform.min() > NEAR_UNIFORM:
        span = _span(uniform, ".6f")
        lines.append(
            f"- The final architecture weights are nearly uniform (normalised entropy {span}; 1 = uniform): "
            "each argmax was decided by tiny margins, so the chosen ops say little about what "
            "the search preferred (see the probability mass, near its uniform value)."
        )
    ratio = pd.to_numeric(protocol["budget_vs_darts"], errors="coerce").dropna()
    if not ratio.empty and ratio.max() < 1:
        span = f"{ratio.min():.2g}" if ratio.min() == ratio.max() else f"{ratio.min():.2g}–{ratio.max():.2g}"
        lines.append(
            f"- Budget: {span} of the DARTS search's weight-training images "
            "(50 epochs × 25k): shares after so short a search say little about converged searches."
        )
    return lines


def _span(values: pd.Series, spec: str = "") -> str:
    low, high = format(values.min(), spec), format(values.max(), spec)
    return low if low == high else f"{low}–{high}"


def _protocol_md(protocol: pd.DataFrame, by: list[str]) -> str:
    cols = {c: c.replace("_", " ") for c in by}
    cols.update(
        {
            "runs": "runs",
            "seeds": "seeds",
            "dataset": "data",
            "epochs": "epochs",
            "images": "images (weights + α)",
            "batch_size": "batch",
            "init_channels": "C",
            "layers": "cells",
            "budget_vs_darts": "weight images × epochs vs DARTS",
        }
    )
    return md_table(
        protocol, cols, {"budget_vs_darts": lambda v: fmt(v, 4) if isinstance(v, float) else fmt(v)}
    )


def build_markdown(runs: list[RunData], out: Path, title: str, sources: Sequence[Path]) -> tuple[str, Writer]:
    """The report's Markdown (figures and CSV tables are written under ``out`` on the way)."""
    from pflnas import __version__

    w = Writer(out)
    complete = [r for r in runs if r.complete]
    if not complete:
        raise PflnasError(nothing_complete(runs))
    choices = choices_frame(complete)
    summary = summary_frame(runs)
    groups = ["strategy", *_varying(choices, ["space", "alpha_mode", "setting"], ["strategy"])]
    headline = share_table(choices, by=[*groups, "cell_type"])
    overall = share_table(choices, by=groups)
    comparisons = _comparisons(choices, groups)
    breakdowns = _breakdowns(choices, groups)
    family = [(headline, "p_chance", chance_verdict), (overall, "p_chance", chance_verdict)]
    family += [(t, "p_chance", chance_verdict) for _, _, t in breakdowns]
    if not comparisons.empty:
        family.append((comparisons, "p", compare_verdict))
    holm_across(family)
    protocol = protocol_table(complete, [g for g in groups if g != "space"] + ["space"])
    n_tests = sum(int(t[c].notna().sum()) for t, c, _ in family)
    lines = [
        f"# {md_text(title)}",
        "",
        f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by pflnas {__version__} from "
        f"{len(runs)} run(s) ({len(complete)} complete) in {md_text(', '.join(str(s) for s in sources))}. "
        f"{n_tests} tests in this report, Holm-adjusted together.",
        "",
        "## Protocol",
        "",
        _protocol_md(protocol, [g for g in groups if g != "space"] + ["space"]),
        "",
        "## Parameter-free share of the chosen ops, against chance",
        "",
    ]
    w.csv(headline, "share_by_cell_type")
    w.csv(overall, "share_overall")
    lines += [_share_md(headline, [*groups, "cell_type"]), "", "All cell types together:", ""]
    lines += [_share_md(overall, groups), ""]
    hue = groups[0] if len(groups) == 1 else groups[-1]
    lines += [w.figure(plot_share_bars(headline, x="cell_type", hue=hue), "share_by_cell_type", "shares"), ""]
    lines += ["### What these runs cannot show", "", *_limits(headline, comparisons, protocol, summary), ""]
    lines += ["### Secondary view: pooled per edge", "", _edge_md(headline, [*groups, "cell_type"]), ""]

    lines += ["## Comparisons (run level, chance-adjusted)", ""]
    if comparisons.empty:
        lines += [
            "_Nothing to compare: every run has the same cell types, α mode, strategy and setting._",
            "",
        ]
    else:
        w.csv(comparisons.drop(columns=["what"]), "comparisons")
        lines += [_compare_md(comparisons), ""]

    lines += ["## Where parameter-free ops are chosen", ""]
    for column, heading, table in breakdowns:
        w.csv(table, f"share_by_{column}")
        lines += [f"### {heading}", "", _share_md(table, [*groups, "cell_type", column]), ""]
    lines += [
        "### Op frequency (per edge)",
        "",
        w.figure(plot_op_frequency(choices, by=groups[0]), "op_frequency", "ops"),
        "",
    ]
    lines += _collapse_md(summary, groups, w)
    lines += _architectures_md(complete, w)
    w.csv(summary.drop(columns=["collapse_reasons"]), "runs")
    lines += ["## Runs", "", _runs_md(summary, runs), ""]
    study = next((p / "study.yaml" for p in sources if (p / "study.yaml").is_file()), None)
    if study is not None:
        lines += ["## Study configuration", "", *md_code_block(study.read_text(), "yaml"), ""]
    lines += ["## Methods", "", METHODS, ""]
    return "\n".join(lines), w


def nothing_complete(runs: list[RunData], shown: int = 3) -> str:
    """Why there is no report: unfinished runs (finish them), or the damaged files, by name."""
    found = [(r, [i.removeprefix(DAMAGED).strip() for i in r.issues if i.startswith(DAMAGED)]) for r in runs]
    damaged = [(r, issues) for r, issues in found if issues]
    if not damaged:
        return "no complete run to report on (every run lacks found.json or metrics); finish them first"
    names = "; ".join(f"{r.path}: {', '.join(issues)}" for r, issues in damaged[:shown])
    more = f" (and {len(damaged) - shown} more runs)" if len(damaged) > shown else ""
    return (
        f"no complete run to report on; damaged files in {names}{more}: restore them from a copy, or "
        "delete them and resume those runs (pflnas search --resume DIR rewrites found.json)"
    )


def _collapse_md(summary: pd.DataFrame, groups: list[str], w: Writer) -> list[str]:
    collapse = collapse_summary(summary, by=groups)
    w.csv(collapse, "collapse")
    means = summary.groupby(groups, dropna=False)[["skip_count_normal", "skip_count_reduce"]].mean()
    collapse = collapse.merge(means.reset_index(), on=groups, how="left")
    cols = {g: g.replace("_", " ") for g in groups}
    cols.update(
        {
            "runs": "runs",
            "flagged": "flagged",
            "share": "share",
            "skip_count_normal": "mean skips / run (normal)",
            "skip_count_reduce": "mean skips / run (reduce)",
        }
    )
    lines = ["## Collapse diagnostics (parameter-free skips only)", "", md_table(collapse, cols), ""]
    for _, row in summary[summary["collapse_flagged"]].iterrows():
        lines.append(f"- {md_code(row['run_id'])}: {md_text('; '.join(row['collapse_reasons']))}")
    return [*lines, ""]


def _architectures_md(complete: list[RunData], w: Writer) -> list[str]:
    first = complete[0]
    trajectory = trajectory_frame([first])
    lines = [
        f"## Architecture weights of {md_code(first.run_id)}",
        "",
        w.figure(plot_trajectories(trajectory, first.run_id), "trajectories", "alpha trajectories"),
        "",
    ]
    if first.arch is not None and first.arch.probabilities:
        lines += [w.figure(plot_probability_heatmap(first.arch), "heatmap", "final probabilities"), ""]
    lines += ["## Found architectures", ""]
    for run in complete[:MAX_DRAWN_RUNS]:
        assert run.arch is not None
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run.run_id)
        lines += [
            f"### {md_code(run.run_id)}",
            "",
            w.figure(draw_architecture(run.arch), f"arch_{safe}", run.run_id),
            "",
        ]
    if len(complete) > MAX_DRAWN_RUNS:
        lines += [f"_{len(complete) - MAX_DRAWN_RUNS} more runs not drawn._", ""]
    return lines


def _varying(df: pd.DataFrame, candidates: Sequence[str], given: Sequence[str] = ()) -> list[str]:
    """The candidate columns that vary and split the runs differently from the columns kept before them
    (a setting named after the α mode it sets adds nothing to grouping by α mode)."""
    kept: list[str] = []
    for c in candidates:
        if c not in df.columns or df[c].nunique(dropna=False) < 2:
            continue
        same = any(
            df.groupby(k, dropna=False)[c].nunique(dropna=False).max() == 1
            and df.groupby(c, dropna=False)[k].nunique(dropna=False).max() == 1
            for k in [*given, *kept]
        )
        if not same:
            kept.append(c)
    return kept
