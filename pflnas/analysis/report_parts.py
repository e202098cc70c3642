"""Pieces every report kind shares: cell formatting, Markdown tables, and the figures/tables writer."""

from __future__ import annotations

import math
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


def md_table(df: pd.DataFrame, columns: dict[str, str], formats: dict[str, Any] | None = None) -> str:
    """A Markdown table of ``df``'s ``columns`` (``{column: header}``), formatted cell by cell."""
    formats = formats or {}
    head = "| " + " | ".join(columns.values()) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    rows = [
        "| " + " | ".join(formats.get(c, fmt)(row[c]) for c in columns) + " |" for _, row in df.iterrows()
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
        return f"![{alt}](figures/{png.name})"

    def csv(self, df: pd.DataFrame, name: str) -> None:
        path = self.out / "tables" / f"{name}.csv"
        atomic_write_text(path, df.to_csv(index=False))
        self.tables.append(path)
