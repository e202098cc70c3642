"""Pieces every report kind shares: cell formatting, Markdown tables, and the figures/tables writer.

Run names, titles, paths, settings and provenance are the user's strings: they enter Markdown only through
:func:`md_text`, :func:`md_code` or :func:`md_code_block`, so none can become HTML or a link in report.html.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from pflnas.analysis.figures import save_figure
from pflnas.utils_io import atomic_write_text


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_p(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return "<0.001" if value < 1e-3 else f"{value:.3f}"


def fmt_interval(low: Any, high: Any) -> str:
    return "–" if pd.isna(low) or pd.isna(high) else f"[{fmt(low)}, {fmt(high)}]"


_MD_SYNTAX = re.compile(r"([\\`*|]|\](?=[(\[:]))")  # backslash, code, emphasis, cell ends, "](" of links


def md_text(value: Any) -> str:
    """``value`` as literal Markdown text on one line: HTML-escaped (no tag or entity of the user's reaches
    report.html) and with the Markdown that could make a link, an image, code or a table cell escaped."""
    return _MD_SYNTAX.sub(r"\\\1", html.escape(" ".join(str(value).split()), quote=False))


def md_code(value: Any) -> str:
    """``value`` as an inline code span on one line, fenced by more backticks than it holds (Markdown
    escapes a code span's HTML itself, so it is not HTML-escaped here)."""
    text = " ".join(str(value).split())
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


def md_code_block(text: str, lang: str = "") -> list[str]:
    """Lines of a fenced code block holding ``text`` verbatim (e.g. a study file); the fence is longer than
    any backtick run in ``text``, so the text cannot close it early."""
    fence = "`" * max(3, max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return [fence + lang, text.rstrip(), fence]


def md_table(df: pd.DataFrame, columns: dict[str, str], formats: dict[str, Any] | None = None) -> str:
    """A Markdown table of ``df``'s ``columns`` (``{column: header}``), formatted cell by cell; every cell
    goes through :func:`md_text` (cells hold run names, settings and other user strings)."""
    formats = formats or {}
    head = "| " + " | ".join(md_text(h) for h in columns.values()) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    rows = [
        "| " + " | ".join(md_text(formats.get(c, fmt)(row[c])) for c in columns) + " |"
        for _, row in df.iterrows()
    ]
    return "\n".join([head, rule, *rows]) if rows else "_no data_"


class Writer:
    """Writes a report's figures (PNG + SVG) and CSV tables under ``out`` and remembers what it wrote."""

    def __init__(self, out: Path):
        self.out = out
        self.figures: list[Path] = []
        self.tables: list[Path] = []

    def figure(self, fig: Any, name: str, alt: str) -> str:
        paths = save_figure(fig, self.out / "figures" / name)
        self.figures += paths
        png = next(p for p in paths if p.suffix == ".png")
        return f"![{md_text(alt)}](figures/{png.name})"

    def csv(self, df: pd.DataFrame, name: str) -> None:
        path = self.out / "tables" / f"{name}.csv"
        atomic_write_text(path, df.to_csv(index=False))
        self.tables.append(path)
