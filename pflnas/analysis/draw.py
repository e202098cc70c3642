"""Drawings of found architectures: a DARTS / NB201 cell as a graph, a block space as a strip of blocks.

Parameter-free ops (at the stride they run at) are drawn in blue/green, trainable ops in red/orange,
``none`` edges dotted grey -- the colours of :func:`pflnas.analysis.figures.op_color`.
"""

from __future__ import annotations

import math

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, Patch, Rectangle

from pflnas.analysis.figures import ZERO_COLOR, new_figure, op_color
from pflnas.arch.record import Architecture, CellArch
from pflnas.ops import PARAM_FREE, get_op
from pflnas.spaces.config import SpaceConfig

NODE_RADIUS = 0.32
X_STEP = 1.8


def _node_positions(space: SpaceConfig) -> dict[int | str, tuple[float, float]]:
    """Intermediate nodes on a horizontal line; two inputs above and below its left end (one input on
    the line); the DARTS output at its right end."""
    pos: dict[int | str, tuple[float, float]] = {}
    ins = space.inputs
    for i in range(ins):
        pos[i] = (0.0, 0.0) if ins == 1 else (0.0, 1.5 - 3.0 * i / (ins - 1))
    for col, node in enumerate(space.node_ids(), start=1):
        pos[node] = (X_STEP * col, 0.0)
    if space.concat_output:
        pos["out"] = (X_STEP * (space.nodes + 1), 0.0)
    return pos


def _bezier(p: tuple[float, float], q: tuple[float, float], rad: float, t: float) -> tuple[float, float]:
    """The point at ``t`` of matplotlib's ``arc3`` curve from ``p`` to ``q`` (equal-aspect data coords)."""
    (x1, y1), (x2, y2) = p, q
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    a, b, c = (1 - t) ** 2, 2 * (1 - t) * t, t**2
    return a * x1 + b * cx + c * x2, a * y1 + b * cy + c * y2


def _node_name(space: SpaceConfig, node: int | str) -> str:
    if node == "out":
        return "c_k"
    if isinstance(node, int) and node < space.inputs:
        return ("c_k-2", "c_k-1")[node] if space.inputs == 2 else "in"
    if not space.concat_output and node == max(space.node_ids()):
        return f"{node}\nout"
    return str(node)


def _arrow(ax: Axes, p: tuple[float, float], q: tuple[float, float], rad: float, **kw: object) -> None:
    ax.add_patch(
        FancyArrowPatch(
            p,
            q,
            connectionstyle=f"arc3,rad={rad}",
            arrowstyle="-|>",
            mutation_scale=10,
            shrinkA=NODE_RADIUS * 72 * 0.6,
            shrinkB=NODE_RADIUS * 72 * 0.6,
            **kw,
        )
    )


def draw_cell_on(ax: Axes, cell: CellArch, space: SpaceConfig) -> None:
    """Draw ``cell`` of ``space`` onto ``ax`` (equal aspect, axes off)."""
    pos = _node_positions(space)
    for e in cell.edges:
        p, q = pos[e.source], pos[e.node]
        from_side = space.inputs == 2 and e.source < 2  # inputs above/below the line: straight edges
        span = e.node - max(e.source, space.inputs - 1)
        # edges along the line skip over nodes: bend them above (alternately below without concat edges)
        rad = 0.0 if from_side or span <= 1 else (-0.3 if "out" in pos or span % 2 == 0 else 0.3)
        stride = space.edge_stride(cell.type, e.source)
        zero = get_op(e.op).is_zero
        color = ZERO_COLOR if zero else op_color(e.op, (get_op(e.op).role(stride) == PARAM_FREE))
        _arrow(ax, p, q, rad, color=color, lw=1.6, linestyle=":" if zero else "-")
        mx, my = _bezier(p, q, rad, 0.62 if from_side else 0.5)
        text = e.op + (" /2" if stride == 2 else "")
        box = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85}
        ax.text(mx, my, text, fontsize=6.5, color=color, ha="center", va="center", bbox=box, zorder=5)
    if "out" in pos:
        last = max(space.node_ids())
        for node in cell.concat:  # concat edges bend below the line
            rad = 0.0 if node == last else 0.25
            _arrow(ax, pos[node], pos["out"], rad, color="#bbbbbb", lw=0.8, linestyle="--")
    for node, (x, y) in pos.items():
        is_input = isinstance(node, int) and node < space.inputs
        face = "#f0f0f0" if is_input or node == "out" else "#fff8dc"
        ax.add_patch(Circle((x, y), NODE_RADIUS, facecolor=face, edgecolor="black", lw=1, zorder=3))
        ax.text(x, y, _node_name(space, node), ha="center", va="center", fontsize=7, zorder=4)
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(-2.0, 2.0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"{cell.name} ({cell.type})", fontsize=9)


def draw_cell(cell: CellArch, space: SpaceConfig) -> Figure:
    """A drawing of one found DARTS / NB201 cell: input nodes, intermediate nodes, the output, and the
    kept edges as arrows labelled with their op (``/2``: the op runs at stride 2)."""
    if space.is_block:
        raise ValueError(f"space {space.name!r} is a block space; use draw_blocks")
    fig, axes = new_figure(figsize=(1.3 * (space.nodes + 2) + 0.5, 3.2))
    draw_cell_on(axes[0, 0], cell, space)
    return fig


def draw_blocks(arch: Architecture) -> Figure:
    """The block-level architecture as a strip of blocks grouped by stage, coloured by op; stride-2 blocks
    have a heavy border and a ``/2`` mark."""
    space = arch.space
    if not space.is_block:
        raise ValueError(f"space {space.name!r} is a cell space; use draw_cell or draw_architecture")
    sites = space.sites()
    fig, axes = new_figure(
        figsize=(max(4.5, 2.5 + 0.55 * len(sites) + 0.3 * len({s.stage for s in sites})), 2.8)
    )
    ax = axes[0, 0]
    used: dict[str, str] = {}
    starts: dict[int, float] = {}
    for site in sites:
        op = arch.block(space.group_of_block(site.index)).op
        x = site.index + 0.6 * site.stage
        starts.setdefault(site.stage, x)
        color = op_color(op, (get_op(op).role(site.stride) == PARAM_FREE))
        pf_differs = get_op(op).role(site.stride) != get_op(op).role(1)
        used.setdefault(f"{op} (s{site.stride})" if pf_differs else op, color)
        ax.add_patch(
            Rectangle(
                (x, 0), 0.9, 1.6, facecolor=color, edgecolor="black", lw=2.2 if site.stride == 2 else 0.6
            )
        )
        ax.text(x + 0.45, 0.8, op, rotation=90, ha="center", va="center", fontsize=6, color="white")
        if site.stride == 2:
            ax.text(x + 0.45, 1.75, "/2", ha="center", fontsize=7)
    for stage, x in starts.items():
        ax.text(x, -0.3, f"stage {stage}", fontsize=7, va="top")
    last = sites[-1].index + 0.6 * sites[-1].stage
    ax.set_xlim(-0.3, last + 1.2)
    ax.set_ylim(-0.8, 2.1)
    ax.axis("off")
    ax.legend(
        handles=[Patch(color=c, label=k) for k, c in used.items()],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    share = arch.param_free_share()
    ax.set_title(
        f"{space.name} ({space.alpha_mode})\nparameter-free share "
        f"{'n/a' if math.isnan(share) else f'{share:.2f}'}",
        fontsize=9,
        loc="left",
    )
    return fig


def draw_architecture(arch: Architecture, max_cells: int = 8, ncols: int = 2) -> Figure:
    """:func:`draw_blocks` for block spaces; for cell spaces a panel per cell (the first ``max_cells``)."""
    if arch.space.is_block:
        return draw_blocks(arch)
    cells = arch.cells[:max_cells]
    ncols = max(1, min(ncols, len(cells)))
    nrows = math.ceil(len(cells) / ncols)
    width = 1.3 * (arch.space.nodes + 2) + 0.5
    fig, axes = new_figure(nrows, ncols, figsize=(width * ncols, 3.0 * nrows + 0.4))
    for ax, cell in zip(axes.flat, cells):
        draw_cell_on(ax, cell, arch.space)
    for ax in list(axes.flat)[len(cells) :]:
        ax.set_visible(False)
    shown = f", first {len(cells)} of {len(arch.cells)} cells" if len(cells) < len(arch.cells) else ""
    share = arch.param_free_share()
    fig.suptitle(
        f"{arch.space.name} ({arch.space.alpha_mode}{shown}): parameter-free share "
        f"{'n/a' if math.isnan(share) else f'{share:.2f}'}",
        fontsize=10,
    )
    return fig
