"""``pflnas report``: a Markdown + HTML report of study or run directories."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from pflnas.cli.paths import check_out_folder
from pflnas.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report")
    p.add_argument(
        "dirs", nargs="+", type=Path, metavar="DIR", help="study directories and/or run directories"
    )
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="report directory (default: DIR/report for one DIR)"
    )
    p.add_argument("--title", help="report title (default: 'pflnas report: ' and the folders' names)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pflnas.analysis.load import IncompleteRunWarning
    from pflnas.analysis.report import write_report

    out = args.out
    if out is None:
        if len(args.dirs) != 1:
            raise ConfigError("several directories: give --out DIR for the report")
        out = args.dirs[0] / "report"
    check_out_folder(out, "--out")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IncompleteRunWarning)
        report = write_report(args.dirs, out, args.title)
    for w in caught:
        if issubclass(w.category, IncompleteRunWarning):
            print(f"note: {w.message}")
    print(
        f"report: {report.markdown_path} and {report.html_path} ({report.complete} of {report.runs} runs "
        f"complete; {len(report.figures)} figure files, {len(report.tables)} CSV tables)"
    )
    return 0
