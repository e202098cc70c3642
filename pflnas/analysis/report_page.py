"""The page every report kind ends as: ``report.md`` rendered to one self-contained ``report.html`` (figures
inlined, raw HTML off), and the :class:`Report` record of what was written. A module of its own so that each
report kind (search runs, layer studies, swap studies) builds on it without importing the others.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import markdown

from pflnas.utils_io import atomic_write_text


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


def joined_paths(paths: Sequence[Path]) -> str:
    return ", ".join(map(str, paths))


def write_page(out: Path, text: str, title: str) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` of ``text`` into ``out``; their paths."""
    md_path = atomic_write_text(out / "report.md", text)
    html_path = atomic_write_text(out / "report.html", to_html(text, out, title))
    return md_path, html_path
