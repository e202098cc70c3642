"""``pflnas report``: a Markdown report and a self-contained HTML page from run or study directories.

Everything comes from the run directories (config, metrics.jsonl, found.json) through the library:
headline shares of parameter-free ops with 95% Wilson and bootstrap intervals, pairwise comparisons with
tests and effect sizes, breakdowns by stage and node position, the probability-mass view, collapse
diagnostics, figures (PNG and SVG) and the run provenance. Tables are also written as CSV.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import markdown
import pandas as pd
import yaml

from pflnas.analysis.figures import save_figure
from pflnas.analysis.frames import choices_frame, summary_frame, trajectory_frame
from pflnas.analysis.load import RunData, load_runs
from pflnas.analysis.plots import (
    draw_architecture,
    plot_accuracy_vs_latency,
    plot_op_frequency,
    plot_pareto,
    plot_probability_heatmap,
    plot_share_bars,
    plot_trajectories,
)
from pflnas.analysis.stats import collapse_summary, compare, share_table
from pflnas.errors import PflnasError
from pflnas.utils_io import atomic_write_text

MAX_DRAWN_RUNS = 12
METHODS = (
    "Shares count the chosen ops (kept edges of derived cells, or block choices) that are parameter-free at "
    "their stride; `none` edges count for neither side. *Wilson* is the 95% Wilson score interval of the "
    "pooled count; *bootstrap* resamples whole runs (seeds) with replacement (2000 resamples, seed 0), so it "
    "accounts for choices within a run not being independent. *Mass* is the mean, over choices, of the "
    "summed final probability of the parameter-free candidates (bootstrap interval over runs). Comparisons: "
    "Fisher's exact test on pooled counts with Cohen's h, and a run-level test on per-run shares (Wilcoxon "
    "signed-rank when both levels occur in the same runs, e.g. normal vs reduction cells; Mann-Whitney U "
    "otherwise) with Cliff's delta. Collapse: a run is flagged when its last epoch crosses the thresholds of "
    "its search config (skip ops per cell or share of blocks, mean skip probability, normalised entropy); "
    "judge flag rates against the random baseline of the same budget."
)


@dataclass
class Report:
    """What :func:`write_report` produced."""

    out: Path
    markdown_path: Path
    html_path: Path
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    runs: int = 0
    complete: int = 0


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _p(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return "<0.001" if value < 1e-3 else f"{value:.3f}"


def md_table(df: pd.DataFrame, columns: dict[str, str], formats: dict[str, Any] | None = None) -> str:
    """A Markdown table of ``df``'s ``columns`` (``{column: header}``), formatted cell by cell."""
    formats = formats or {}
    head = "| " + " | ".join(columns.values()) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    rows = [
        "| " + " | ".join(formats.get(c, _fmt)(row[c]) for c in columns) + " |" for _, row in df.iterrows()
    ]
    return "\n".join([head, rule, *rows]) if rows else "_no data_"


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


def _share_md(table: pd.DataFrame, by: list[str]) -> str:
    cols = {c: c.replace("_", " ") for c in by}
    cols.update(
        {
            "k": "param-free",
            "n": "chosen",
            "share": "share",
            "wilson": "95% Wilson",
            "boot": "95% bootstrap (runs)",
            "runs": "runs",
            "pf_mass": "mass",
        }
    )
    t = table.copy()
    t["wilson"] = [f"[{_fmt(a)}, {_fmt(b)}]" for a, b in zip(t["ci_low"], t["ci_high"])]
    t["boot"] = [f"[{_fmt(a)}, {_fmt(b)}]" for a, b in zip(t["boot_low"], t["boot_high"])]
    return md_table(t, cols)


def _compare_md(rows: pd.DataFrame) -> str:
    cols = {
        "what": "comparison",
        "shares": "shares (a / b)",
        "fisher_p": "Fisher p",
        "cohens_h": "Cohen's h",
        "run_test": "run-level test",
        "run_p": "p",
        "cliffs_delta": "Cliff's δ",
        "verdict": "verdict",
    }
    return md_table(rows, cols, {"fisher_p": _p, "run_p": _p})


class _Writer:
    def __init__(self, out: Path):
        self.out = out
        self.figures: list[Path] = []
        self.tables: list[Path] = []

    def figure(self, fig: Any, name: str, alt: str) -> str:
        paths = save_figure(fig, self.out / "figures" / name)
        self.figures += paths
        png = next(p for p in paths if p.suffix == ".png")
        return f"![{alt}](figures/{png.name})"

    def csv(self, df: pd.DataFrame, name: str) -> None:
        path = self.out / "tables" / f"{name}.csv"
        atomic_write_text(path, df.to_csv(index=False))
        self.tables.append(path)


def _comparisons(choices: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    frames = []
    plan = [("cell_type", "normal", "reduce", [g for g in groups if g != "cell_type"])]
    if set(choices["alpha_mode"]) >= {"individual", "shared"}:
        plan.append(("alpha_mode", "individual", "shared", [g for g in groups if g != "alpha_mode"]))
    if "random" in set(choices["strategy"]):
        for s in sorted(set(choices["strategy"]) - {"random"}):
            plan.append(("strategy", s, "random", [g for g in groups if g != "strategy"]))
    settings = list(dict.fromkeys(choices["setting"]))
    for other in settings[1:]:
        plan.append(("setting", settings[0], other, [g for g in groups if g != "setting"]))
    for factor, a, b, by in plan:
        if not ({a, b} <= set(choices[factor])):
            continue
        rows = compare(choices, factor, a, b, by=by or None)
        rows = rows[(rows["n_a"] > 0) & (rows["n_b"] > 0)]  # groups holding only one of the two levels
        if rows.empty:
            continue
        rows["what"] = [
            f"{factor}: {a} vs {b}" + (" (" + ", ".join(f"{k}={r[k]}" for k in by) + ")" if by else "")
            for _, r in rows.iterrows()
        ]
        rows["shares"] = [f"{_fmt(x)} / {_fmt(y)}" for x, y in zip(rows["share_a"], rows["share_b"])]
        frames.append(rows)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _runs_md(summary: pd.DataFrame, runs: list[RunData]) -> str:
    device = {r.run_id: (r.arch.provenance.get("device") if r.arch else None) for r in runs}
    t = summary.copy()
    t["device"] = [device.get(i) for i in t["run_id"]]
    t["flag"] = ["yes" if f else "" for f in t["collapse_flagged"]]
    t["wall"] = [
        _fmt(w, 0) + " s" if isinstance(w, float) and not math.isnan(w) else "–" for w in t["wall_time_s"]
    ]
    cols = {
        "run_id": "run",
        "strategy": "strategy",
        "alpha_mode": "α",
        "setting": "setting",
        "seed": "seed",
        "epochs": "epochs",
        "val_acc": "val acc",
        "param_free_share": "param-free share",
        "skip_count": "skips",
        "flag": "collapse?",
        "wall": "wall time",
        "device": "device",
        "complete": "complete",
    }
    return md_table(t, cols)


def build_markdown(
    runs: list[RunData], out: Path, title: str, sources: Sequence[Path]
) -> tuple[str, _Writer]:
    """The report's Markdown (figures and CSV tables are written under ``out`` on the way)."""
    from pflnas import __version__

    w = _Writer(out)
    complete = [r for r in runs if r.complete]
    if not complete:
        raise PflnasError(
            "no complete run to report on (every run lacks found.json or metrics); finish them first"
        )
    choices = choices_frame(complete)
    summary = summary_frame(runs)
    groups = ["strategy", *_varying(choices, ["space", "alpha_mode", "setting"], ["strategy"])]
    lines = [
        f"# {title}",
        "",
        f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by pflnas {__version__} from "
        f"{len(runs)} run(s) ({len(complete)} complete) in {', '.join(str(s) for s in sources)}.",
        "",
        "## Parameter-free share of the chosen ops",
        "",
    ]
    headline = share_table(choices, by=[*groups, "cell_type"])
    w.csv(headline, "share_by_cell_type")
    lines += [_share_md(headline, [*groups, "cell_type"]), ""]
    overall = share_table(choices, by=groups)
    w.csv(overall, "share_overall")
    lines += ["All cell types together:", "", _share_md(overall, groups), ""]
    hue = groups[0] if len(groups) == 1 else groups[-1]
    lines += [w.figure(plot_share_bars(headline, x="cell_type", hue=hue), "share_by_cell_type", "shares"), ""]

    comparisons = _comparisons(choices, groups)
    lines += ["## Comparisons", ""]
    if comparisons.empty:
        lines += [
            "_Nothing to compare: every run has the same cell types, α mode, strategy and setting._",
            "",
        ]
    else:
        w.csv(comparisons.drop(columns=["what", "shares"]), "comparisons")
        lines += [_compare_md(comparisons), ""]

    lines += ["## Where parameter-free ops are chosen", ""]
    for column, heading in (("stage", "By stage"), ("position", "By node position (cells) / block index")):
        known = choices[choices[column].notna()]
        if known.empty:
            continue
        table = share_table(known, by=[*groups, column])
        w.csv(table, f"share_by_{column}")
        lines += [f"### {heading}", "", _share_md(table, [*groups, column]), ""]
    lines += [
        "### Op frequency",
        "",
        w.figure(plot_op_frequency(choices, by=groups[0]), "op_frequency", "ops"),
        "",
    ]

    lines += ["## Collapse diagnostics", ""]
    collapse = collapse_summary(summary, by=groups)
    w.csv(collapse, "collapse")
    lines += [
        md_table(
            collapse,
            {
                **{g: g.replace("_", " ") for g in groups},
                "runs": "runs",
                "flagged": "flagged",
                "share": "share",
            },
        ),
        "",
    ]
    for _, row in summary[summary["collapse_flagged"]].iterrows():
        lines.append(f"- `{row['run_id']}`: {'; '.join(row['collapse_reasons'])}")
    lines.append("")

    first = complete[0]
    trajectory = trajectory_frame([first])
    lines += [
        f"## Architecture weights of `{first.run_id}`",
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
            f"### `{run.run_id}`",
            "",
            w.figure(draw_architecture(run.arch), f"arch_{safe}", run.run_id),
            "",
        ]
    if len(complete) > MAX_DRAWN_RUNS:
        lines += [f"_{len(complete) - MAX_DRAWN_RUNS} more runs not drawn._", ""]

    w.csv(summary.drop(columns=["collapse_reasons"]), "runs")
    lines += ["## Runs", "", _runs_md(summary, runs), ""]
    study = next((p / "study.yaml" for p in sources if (p / "study.yaml").is_file()), None)
    if study is not None:
        lines += ["## Study configuration", "", "```yaml", study.read_text().rstrip(), "```", ""]
    lines += ["## Methods", "", METHODS, ""]
    return "\n".join(lines), w


HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: left; }
th { background: #f3f3f3; } img { max-width: 100%; } code, pre { background: #f6f6f6; }
"""


def to_html(text: str, out: Path, title: str) -> str:
    """Render the Markdown as one self-contained HTML page (figures inlined as data URIs)."""
    body = markdown.markdown(text, extensions=["tables", "fenced_code"])

    def inline(match: re.Match[str]) -> str:
        path = out / match.group(1)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="(figures/[^"]+\.png)"', inline, body)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{HTML_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def is_layer_study(path: Path) -> bool:
    """A ``kind: layer`` study directory (retrained homogeneous networks, see :mod:`pflnas.study.layer`)."""
    study = path / "study.yaml"
    if not study.is_file():
        return False
    try:
        data = yaml.safe_load(study.read_text())
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and data.get("kind") == "layer"


def build_layer_markdown(sources: Sequence[Path], out: Path, title: str) -> tuple[str, _Writer, int]:
    """The report of layer studies: accuracy against measured latency and parameters, one row per network."""
    from pflnas import __version__
    from pflnas.study.layer import layer_results

    w = _Writer(out)
    rows = pd.DataFrame([r for src in sources for r in layer_results(src)])
    if rows.empty:
        raise PflnasError(
            "no complete network in the layer study yet (each needs retrain/result.json and profile.json)"
        )
    rows = rows.sort_values(["space", "latency_ms"], na_position="last")
    w.csv(rows, "layer_results")
    lines = [
        f"# {title}",
        "",
        f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by pflnas {__version__}: "
        f"{len(rows)} homogeneous network(s) retrained and profiled, from {', '.join(map(str, sources))}.",
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
            f"## Study configuration ({src.name})",
            "",
            "```yaml",
            (src / "study.yaml").read_text().rstrip(),
            "```",
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


def write_report(paths: Sequence[str | Path], out: str | Path, title: str | None = None) -> Report:
    """Load the runs under ``paths`` (run or study directories) and write ``report.md``, ``report.html``,
    ``figures/`` and ``tables/`` into ``out``. Every file is written atomically. Layer studies
    (``kind: layer``) get the accuracy-vs-latency report instead."""
    sources = [Path(p) for p in paths]
    for p in sources:
        if not p.is_dir():
            raise PflnasError(f"{p}: not a directory; give study or run directories")
    out_dir = Path(out)
    title = title or f"pflnas report: {', '.join(p.name for p in sources)}"
    layer = [is_layer_study(p) for p in sources]
    if any(layer):
        if not all(layer):
            raise PflnasError("report layer studies and search runs separately (different kinds of study)")
        text, writer, n = build_layer_markdown(sources, out_dir, title)
        md_path = atomic_write_text(out_dir / "report.md", text)
        html_path = atomic_write_text(out_dir / "report.html", to_html(text, out_dir, title))
        return Report(out_dir, md_path, html_path, writer.figures, writer.tables, n, n)
    try:
        runs = load_runs(*sources)
    except (FileNotFoundError, ValueError) as exc:
        raise PflnasError(str(exc)) from None
    text, writer = build_markdown(runs, out_dir, title, sources)
    md_path = atomic_write_text(out_dir / "report.md", text)
    html_path = atomic_write_text(out_dir / "report.html", to_html(text, out_dir, title))
    return Report(
        out_dir, md_path, html_path, writer.figures, writer.tables, len(runs), sum(r.complete for r in runs)
    )
