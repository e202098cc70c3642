"""``pflnas report``: a Markdown report and a self-contained HTML page from run or study directories.

Everything comes from the run directories (config, metrics.jsonl, found.json) through the library. Search
runs get :mod:`pflnas.analysis.search_report` (run-level shares against chance, comparisons, protocol);
layer studies :mod:`pflnas.analysis.layer_report`, swap studies :mod:`pflnas.analysis.swap_report`; each
ends as the page of :mod:`pflnas.analysis.report_page`. Figures are PNG and SVG, tables also CSV.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib import rc_context

from pflnas.analysis.layer_report import build_layer_markdown, is_layer_study
from pflnas.analysis.load import load_runs
from pflnas.analysis.report_page import Report, write_page
from pflnas.analysis.search_report import build_markdown
from pflnas.analysis.swap_report import is_swap_study, write_swap_report
from pflnas.errors import PflnasError
from pflnas.rundir import claim_new


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
    if any(is_swap_study(p) for p in sources):  # found networks vs counterfactuals (pflnas.study.swap)
        return write_swap_report(sources, out_dir, title)
    layer = [is_layer_study(p) for p in sources]
    if any(layer):
        if not all(layer):
            raise PflnasError("report layer studies and search runs separately (different kinds of study)")
        text, writer, n = build_layer_markdown(sources, out_dir, title)
        md_path, html_path = write_page(out_dir, text, title)
        return Report(out_dir, md_path, html_path, writer.figures, writer.tables, n, n)
    try:
        runs = load_runs(*sources)
    except (FileNotFoundError, ValueError) as exc:
        raise PflnasError(str(exc)) from None
    text, writer = build_markdown(runs, out_dir, title, sources)
    md_path, html_path = write_page(out_dir, text, title)
    return Report(
        out_dir, md_path, html_path, writer.figures, writer.tables, len(runs), sum(r.complete for r in runs)
    )
