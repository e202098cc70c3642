"""Figure plumbing shared by the plots: Agg-backed figures, the op palette, atomic PNG+SVG saving.

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas, never through ``pyplot``: nothing is
registered globally (no leaks in loops, no backend switch in a notebook, which still displays a returned
Figure), and it works headless.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pflnas.ops import PARAM_FREE, get_op, list_ops
from pflnas.utils_io import atomic_write

# Parameter-free ops are drawn in blues/greens, trainable ops in reds/oranges/browns, ``none`` in grey.
PARAM_FREE_COLORS = ("#1f77b4", "#2ca02c", "#17becf", "#08519c", "#74c476", "#6baed6", "#006d2c")
TRAINABLE_COLORS = (
    *("#d62728", "#ff7f0e", "#8c564b", "#e6550d", "#a50f15", "#fd8d3c"),
    *("#c51b8a", "#7f2704", "#fdae6b", "#f768a1", "#bcbd22", "#d6616b"),
)
PARAM_FREE_ACCENT, TRAINABLE_ACCENT, ZERO_COLOR = "#1f77b4", "#d62728", "#9e9e9e"
FORMATS = ("png", "svg")


def new_figure(
    nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None, **subplot_kw: Any
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout Figure on an Agg canvas and its axes as a 2-D array."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def _family(param_free: bool) -> list[str]:
    """The registered ops that can take this family's colour, in registry order."""
    out = []
    for op in list_ops():
        spec = get_op(op)
        if spec.is_zero:
            continue
        if any((spec.role(s) == PARAM_FREE) == param_free for s in spec.strides):
            out.append(op)
    return out


def op_color(op: str, param_free: bool | None = None) -> str:
    """A stable colour for ``op``: a blue/green when parameter-free, a red/orange otherwise, grey for
    ``none``. ``param_free=None`` takes the op's parameter-freeness at stride 1 (its only stride if it has
    one); pass the value at the choice's stride where it matters (``skip_connect`` at stride 2)."""
    try:
        spec = get_op(op)
    except KeyError:
        return ZERO_COLOR
    if spec.is_zero:
        return ZERO_COLOR
    if param_free is None:
        param_free = spec.role(1 if 1 in spec.strides else min(spec.strides)) == PARAM_FREE
    palette = PARAM_FREE_COLORS if param_free else TRAINABLE_COLORS
    family = _family(param_free)
    index = family.index(op) if op in family else len(family)
    return palette[index % len(palette)]


def save_figure(fig: Figure, path: str | Path, dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``<path>.png`` and ``<path>.svg`` atomically (temp file, then ``os.replace``).

    A ``.png``/``.svg`` suffix on ``path`` is replaced. Returns the written paths.
    """
    base = Path(path)
    if base.suffix.lower() in {f".{f}" for f in FORMATS}:
        base = base.with_suffix("")
    written = []
    for fmt in FORMATS:
        target = base.with_name(f"{base.name}.{fmt}")
        atomic_write(target, lambda fh, fmt=fmt: fig.savefig(fh, format=fmt, dpi=dpi))
        written.append(target)
    return written
