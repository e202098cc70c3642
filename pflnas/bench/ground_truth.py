"""``pflnas bench nb201 --op-wins``: the ground-truth report (no search) -- per-edge op wins, the Pareto
front's parameter-free share beside chance -- as JSON, Markdown and two figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pflnas.bench.nb201 import NB201Table
from pflnas.bench.op_wins import DISCONNECTED, ParetoData, op_groups, op_wins, pareto_data, pareto_summary
from pflnas.bench.summary import chance_rate
from pflnas.utils_io import atomic_write_json, atomic_write_text

FIGURES = ("op_wins", "pareto")


def ground_truth_report(
    table: NB201Table, threshold: float = DISCONNECTED
) -> tuple[dict[str, Any], ParetoData]:
    """The JSON report, and the per-cell arrays its Pareto figure draws."""
    groups = op_groups()
    chance = chance_rate(table)
    data = pareto_data(table)
    report = {
        "benchmark": "nb201",
        "analysis": "op-wins",
        "table": {"source": "analog-nasbench", "metric": table.metric, "dataset": "cifar10 (test)"},
        "param_free_ops": groups.names(groups.param_free),
        "trainable_ops": groups.names(groups.trainable),
        "excluded_ops": groups.names(groups.zero),
        "disconnected_threshold": threshold,
        "edges": op_wins(table, threshold),
        "pareto": {
            "params_from": "pflnas NB201 network (C=16, 5 cells per stage, 10 classes)",
            **pareto_summary(table, data, chance),
        },
        "chance": chance,
    }
    return report, data


def write_figures(report: dict[str, Any], data: ParetoData, table: NB201Table, out: Path) -> list[Path]:
    """``out/op_wins.{png,svg}`` and ``out/pareto.{png,svg}``."""
    from pflnas.analysis.figures import save_figure
    from pflnas.bench.figures import op_wins_figure, pareto_figure

    written = save_figure(op_wins_figure(report["edges"], report["disconnected_threshold"]), out / "op_wins")
    fig = pareto_figure(data.params, table.acc, data.front, data.shares, report["chance"])
    return written + save_figure(fig, out / "pareto")


def ground_truth_markdown(report: dict[str, Any]) -> str:
    pf, tr = ", ".join(report["param_free_ops"]), ", ".join(report["trainable_ops"])
    lines = [
        f"Per edge, over every context of the other five edges: best parameter-free op ({pf}) against best "
        f"trainable op ({tr}); contexts where all four cells score <= {report['disconnected_threshold']}% "
        "are left out.",
        "",
        "| edge | contexts | parameter-free wins | mean best param-free - best trainable (pp) |",
        "| --- | --- | --- | --- |",
    ]
    for edge, row in report["edges"].items():
        lines.append(
            f"| {edge} | {row['contexts']} | {row['win_fraction']:.3f} | {row['mean_delta_pp']:+.2f} |"
        )
    p = report["pareto"]
    lines += [
        "",
        f"Accuracy-vs-parameters Pareto front ({p['params_from']}; {p['params_range'][0]:,}-"
        f"{p['params_range'][1]:,} parameters):",
        "",
        "| cells | count | parameter-free share | chance |",
        "| --- | --- | --- | --- |",
    ]
    for key, name in (("front", "Pareto front"), ("top_1pct", "best 1% by accuracy"), ("all_cells", "all")):
        row = p[key]
        share = "n/a" if row["param_free_share"] is None else f"{row['param_free_share']:.3f}"
        lines.append(f"| {name} | {row['cells']} | {share} | {row['chance']:.2f} |")
    return "\n".join(lines) + "\n"


def write_ground_truth(table: NB201Table, out: Path) -> dict[str, Any]:
    """Compute the report and write ``op_wins.json``, ``op_wins.md`` and the figures into ``out``."""
    report, data = ground_truth_report(table)
    atomic_write_json(out / "op_wins.json", report)
    atomic_write_text(out / "op_wins.md", ground_truth_markdown(report))
    write_figures(report, data, table, out)
    return report
