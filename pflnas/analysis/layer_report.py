"""The report of layer studies (:mod:`pflnas.study.layer`): accuracy against measured latency and parameters
of homogeneous networks, one row per network retrained and profiled."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pflnas.analysis.plots import plot_accuracy_vs_latency, plot_pareto
from pflnas.analysis.report_page import joined_paths
from pflnas.analysis.report_parts import Writer, md_code_block, md_table, md_text
from pflnas.errors import PflnasError
from pflnas.parsing import load_yaml


def is_layer_study(path: Path) -> bool:
    """A ``kind: layer`` study directory (retrained homogeneous networks, see :mod:`pflnas.study.layer`)."""
    study = path / "study.yaml"
    if not study.is_file():
        return False
    try:
        data = load_yaml(study, "study file")
    except PflnasError:
        return False
    return isinstance(data, dict) and data.get("kind") == "layer"


def build_layer_markdown(sources: Sequence[Path], out: Path, title: str) -> tuple[str, Writer, int]:
    """The report of layer studies: accuracy against measured latency and parameters, one row per network."""
    from pflnas import __version__
    from pflnas.study.layer import layer_results

    w = Writer(out)
    rows = pd.DataFrame([r for src in sources for r in layer_results(src)])
    if rows.empty:
        raise PflnasError(
            "no complete network in the layer study yet (each needs retrain/result.json and profile.json)"
        )
    rows = rows.sort_values(["space", "latency_ms"], na_position="last")
    w.csv(rows, "layer_results")
    lines = [
        f"# {md_text(title)}",
        "",
        f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by pflnas {__version__}: "
        f"{len(rows)} homogeneous network(s) retrained and profiled, from {md_text(joined_paths(sources))}.",
        "",
        "## Accuracy against measured latency and parameters",
        "",
        md_table(
            rows,
            {
                "op": "op",
                "space": "space",
                "seed": "seed",
                "top1": "top-1",
                "params": "params",
                "macs": "MACs",
                "latency_ms": "latency ms (batch 1)",
                "throughput": "images/s",
                "param_free_share": "param-free share",
            },
        ),
        "",
        w.figure(plot_accuracy_vs_latency(rows), "accuracy_vs_latency", "accuracy vs latency"),
        "",
        w.figure(plot_pareto(rows, "params", "top1", label="op"), "accuracy_vs_params", "accuracy vs params"),
        "",
    ]
    for src in sources:
        lines += [
            f"## Study configuration ({md_text(src.name)})",
            "",
            *md_code_block((src / "study.yaml").read_text(), "yaml"),
            "",
        ]
    lines += [
        "## Methods",
        "",
        "Every network uses one op on every kept edge (cells: node n reads nodes n-1 and n-2) or block, "
        "is retrained with the study's recipe and profiled with `pflnas profile` (median of repeated timed "
        "passes after warm-up; the thread count and device are in each run's profile.json).",
        "",
    ]
    return "\n".join(lines), w, len(rows)
