"""``pflnas report``: a Markdown report and a self-contained HTML page from run or study directories.

Everything comes from the run directories (config, metrics.jsonl, found.json) through the library. Search
runs get :mod:`pflnas.analysis.search_report` (run-level shares against chance, comparisons, protocol);
layer studies their accuracy-vs-latency report. Figures are PNG and SVG, tables also CSV.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import markdown
import pandas as pd
from matplotlib import rc_context

from pflnas.analysis.load import load_runs
from pflnas.analysis.plots import plot_accuracy_vs_latency, plot_pareto
from pflnas.analysis.report_parts import Writer, fmt, fmt_p, md_code_block, md_table, md_text
from pflnas.analysis.search_report import build_markdown
from pflnas.errors import PflnasError
from pflnas.parsing import load_yaml
from pflnas.rundir import claim_new
from pflnas.utils_io import atomic_write_text

_Writer, _fmt, _p = Writer, fmt, fmt_p  # the names the report kinds used before the split


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


HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: left; }
th { background: #f3f3f3; } img { max-width: 100%; } code, pre { background: #f6f6f6; }
"""


def markdown_to_html(text: str) -> str:
    """HTML of the report's Markdown with raw HTML switched off: a tag in the text comes out as text, so
    even a user string that escaped :func:`~pflnas.analysis.report_parts.md_text` cannot inject markup."""
    md = markdown.Markdown(extensions=["tables", "fenced_code"])
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    return md.convert(text)


def to_html(text: str, out: Path, title: str) -> str:
    """Render the Markdown as one self-contained HTML page (figures inlined as data URIs)."""
    body = markdown_to_html(text)
    figures = {p.name for p in (out / "figures").glob("*.png")}

    def inline(match: re.Match[str]) -> str:
        if match.group(1) not in figures:  # only the report's own figures are read
            return match.group(0)
        data = base64.b64encode((out / "figures" / match.group(1)).read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="figures/([A-Za-z0-9_.-]+\.png)"', inline, body)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{HTML_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


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


def joined_paths(paths: Sequence[Path]) -> str:
    return ", ".join(map(str, paths))


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


@rc_context({"text.parse_math": False})  # a "$" in a run name or title is text in a figure, not TeX
def write_report(paths: Sequence[str | Path], out: str | Path, title: str | None = None) -> Report:
    """Load the runs under ``paths`` (run or study directories) and write ``report.md``, ``report.html``,
    ``figures/`` and ``tables/`` into ``out``. Every file is written atomically. Layer studies
    (``kind: layer``) get the accuracy-vs-latency report instead, swap studies (``kind: swap``) the
    paired-difference report of :mod:`pflnas.analysis.swap_report`."""
    sources = [Path(p) for p in paths]
    for p in sources:
        if not p.is_dir():
            raise PflnasError(f"{p}: not a directory; give study or run directories")
    out_dir = Path(out)
    title = title or f"pflnas report: {', '.join(p.name for p in sources)}"
    # a report replaces only a report pflnas wrote there (pflnas.rundir), one process at a time
    with claim_new(out_dir, "report", reuse=True):
        return _write_kind(sources, out_dir, title)


def _write_kind(sources: list[Path], out_dir: Path, title: str) -> Report:
    """The report of the kind the sources are (swap study, layer study, or search runs)."""
    from pflnas.analysis.swap_report import is_swap_study, write_swap_report  # it imports this module

    if any(is_swap_study(p) for p in sources):  # found networks vs counterfactuals (pflnas.study.swap)
        return write_swap_report(sources, out_dir, title)
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
