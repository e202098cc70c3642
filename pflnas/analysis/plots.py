"""Charts of the analysis tables. Every function takes DataFrames (or an Architecture / probabilities) and
returns a ``matplotlib.figure.Figure``; :func:`save_figure` writes it as PNG and SVG.

Architecture drawings (:func:`draw_cell`, :func:`draw_blocks`, :func:`draw_architecture`) live in
:mod:`pflnas.analysis.draw` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from pflnas.analysis.draw import draw_architecture, draw_blocks, draw_cell
from pflnas.analysis.figures import ZERO_COLOR, new_figure, op_color, save_figure
from pflnas.analysis.stats import pareto_mask, wilson_interval
from pflnas.arch.record import Architecture
from pflnas.ops import get_op, list_ops
from pflnas.spaces.labels import edge_label

__all__ = [
    "draw_architecture",
    "draw_blocks",
    "draw_cell",
    "plot_accuracy_vs_latency",
    "plot_op_frequency",
    "plot_pareto",
    "plot_probability_heatmap",
    "plot_share_bars",
    "plot_trajectories",
    "save_figure",
]


def _levels(series: pd.Series) -> list:
    return list(dict.fromkeys(series.tolist()))


def plot_share_bars(
    share_table: pd.DataFrame, x: str, hue: str | None = None, ci: str = "runs", title: str | None = None
) -> Figure:
    """Bars of ``share`` per ``x`` level (one bar per ``hue`` level) from :func:`share_table` output, with
    the run-level t-interval (``ci="runs"``: ``ci_low``/``ci_high``) or the run bootstrap (``ci="boot"``),
    the number of runs, and the chance rate of the same choices as a black dash on every bar."""
    low_col, high_col = ("ci_low", "ci_high") if ci == "runs" else ("boot_low", "boot_high")
    xs = _levels(share_table[x])
    hues = _levels(share_table[hue]) if hue else [None]
    fig, axes = new_figure(figsize=(max(5.5, 2.0 + 0.6 * len(xs) * len(hues)), 3.8))
    ax = axes[0, 0]
    width = 0.8 / len(hues)
    for j, level in enumerate(hues):
        part = share_table if hue is None else share_table[share_table[hue] == level]
        for i, xv in enumerate(xs):
            row = part[part[x] == xv]
            if row.empty:
                continue
            r = row.iloc[0]
            pos = i - 0.4 + width * (j + 0.5)
            err = np.clip([[r["share"] - r[low_col]], [r[high_col] - r["share"]]], 0, None)
            ax.bar(pos, r["share"], width * 0.92, color=f"C{j}", label=str(level) if i == 0 else None)
            if not np.isnan(err).any():
                ax.errorbar(pos, r["share"], yerr=err, color="black", capsize=3, lw=1)
            chance = r.get("chance", np.nan)
            if not pd.isna(chance):
                ax.hlines(chance, pos - width * 0.46, pos + width * 0.46, colors="black", lw=2.2, ls="--")
            if "runs" in r:
                top = r[high_col] if not np.isnan(r[high_col]) else r["share"]
                ax.text(pos, min(top, 1.0) + 0.02, f"{int(r['runs'])} runs", ha="center", fontsize=7)
    ax.plot([], [], color="black", lw=2.2, ls="--", label="chance")
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_ylim(0, 1.12)
    ax.set_xlabel(x)
    ax.set_ylabel("parameter-free share (mean of runs)")
    ax.legend(title=hue, fontsize=8)
    ax.set_title(title or f"parameter-free share by {x}" + (f" and {hue}" if hue else ""))
    return fig


def _op_key(op: str, stride: int) -> str:
    """The op's name, marked with its stride where that changes parameter-freeness (skip_connect @s2)."""
    return op if get_op(op).role(stride) == get_op(op).role(1) else f"{op} @s{stride}"


def plot_op_frequency(choices: pd.DataFrame, by: str | None = None, title: str | None = None) -> Figure:
    """Frequency of each chosen op (share of choices, Wilson 95% CI), one panel per ``by`` level.

    Parameter-free ops (at the choice's stride) are blue/green and listed first, trainable ones red/orange.
    """
    df = choices.assign(op_key=[_op_key(o, int(s)) for o, s in zip(choices["op"], choices["stride"])])
    pf_of = dict(zip(df["op_key"], df["param_free"]))
    base = {k: k.split(" @")[0] for k in pf_of}
    order = sorted(
        pf_of, key=lambda k: (not pf_of[k], list_ops().index(base[k]) if base[k] in list_ops() else 99)
    )
    levels = (_levels(df[by]) if by else []) or [None]
    width = max(2.6, 0.9 + 0.45 * len(order))
    fig, axes = new_figure(1, len(levels), figsize=(width * len(levels) + 0.6, 4.0), sharey=True)
    for ax, level in zip(axes[0], levels):
        part = df if by is None else df[df[by] == level]
        counts = part["op_key"].value_counts()
        n = len(part)
        for i, key in enumerate(order):
            k = int(counts.get(key, 0))
            low, high = wilson_interval(k, n)
            share = k / n if n else math.nan
            color = ZERO_COLOR if get_op(base[key]).is_zero else op_color(base[key], bool(pf_of[key]))
            ax.bar(i, share, 0.8, color=color)
            if n:
                err = np.clip([[share - low], [high - share]], 0, None)
                ax.errorbar(i, share, yerr=err, color="black", capsize=2, lw=1)
        ax.set_xticks(range(len(order)), order, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{by}={level} (n={n})" if by else f"n={n} choices", fontsize=9)
    axes[0, 0].set_ylabel("share of choices")
    handles = [
        Line2D([], [], color=op_color("max_pool_3x3"), lw=6, label="parameter-free"),
        Line2D([], [], color=op_color("conv_3x3"), lw=6, label="trainable"),
    ]
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncols=2)
    if title:
        fig.suptitle(title)
    return fig


def plot_trajectories(
    trajectory: pd.DataFrame,
    run_id: str,
    labels: Sequence[str] | None = None,
    max_panels: int = 16,
    ncols: int = 4,
) -> Figure:
    """Op probability over epochs for one run: a panel per choice label (at most ``max_panels``; the first
    ones unless ``labels`` picks), a line per op coloured as in :func:`op_color`. ValueError if the run has
    no rows."""
    df = trajectory[trajectory["run_id"] == run_id]
    if df.empty:
        raise ValueError(f"no trajectory rows for run {run_id!r}")
    all_labels = _levels(df["label"])
    chosen = [lab for lab in (labels or all_labels) if lab in set(all_labels)][:max_panels]
    ncols = max(1, min(ncols, len(chosen)))
    nrows = math.ceil(len(chosen) / ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(2.6 * ncols, 2.0 * nrows + 0.8), sharex=True, sharey=True)
    seen: dict[str, str] = {}
    for ax, label in zip(axes.flat, chosen):
        part = df[df["label"] == label]
        for op, line in part.groupby("op", sort=False):
            first = line.iloc[0]
            pf, stride = first["param_free"], first["stride"]
            color = op_color(op, None if pd.isna(pf) else bool(pf))
            ax.plot(line["epoch"], line["prob"], color=color, lw=1.4)
            seen.setdefault(op if pd.isna(stride) else _op_key(op, int(stride)), color)
        ax.set_title(label, fontsize=8)
        ax.set_ylim(0, 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(chosen) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("probability")
    shown = f" (first {len(chosen)} of {len(all_labels)} choices)" if len(chosen) < len(all_labels) else ""
    fig.suptitle(f"run {run_id}: op probabilities{shown}", fontsize=10)
    fig.legend(
        handles=[Line2D([], [], color=c, lw=2, label=op) for op, c in seen.items()],
        loc="outside lower center",
        ncols=min(len(seen), 6),
        fontsize=8,
    )
    return fig


def plot_probability_heatmap(
    arch_or_probs: Architecture | Mapping[str, Mapping[str, float]],
    ops: Sequence[str] | None = None,
    max_rows: int = 64,
    title: str | None = None,
) -> Figure:
    """Final op probabilities: a row per choice label (first ``max_rows``), a column per op. Given an
    Architecture, its chosen ops are outlined; ops that are not candidates of a choice are blank."""
    arch = arch_or_probs if isinstance(arch_or_probs, Architecture) else None
    probs = arch.probabilities if arch is not None else arch_or_probs
    if ops is None:
        ops = (
            list(arch.space.ops)
            if arch is not None
            else list(dict.fromkeys(o for d in probs.values() for o in d))
        )
    labels = list(probs)[:max_rows]
    matrix = np.array([[probs[lab].get(op, np.nan) for op in ops] for lab in labels], dtype=float)
    fig, axes = new_figure(figsize=(1.2 + 0.6 * len(ops), 1.4 + 0.2 * max(len(labels), 4)))
    ax = axes[0, 0]
    image = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_facecolor("#eeeeee")
    fig.colorbar(image, ax=ax, label="probability", shrink=0.8)
    ax.set_xticks(range(len(ops)), ops, rotation=60, ha="right", fontsize=8)
    for tick, op in zip(ax.get_xticklabels(), ops):
        tick.set_color(op_color(op))
    ax.set_yticks(range(len(labels)), labels, fontsize=6 if len(labels) > 30 else 8)
    if arch is not None:
        _outline_chosen(ax, arch, labels, list(ops))
    shown = f" (first {len(labels)} of {len(probs)})" if len(labels) < len(probs) else ""
    ax.set_title((title or "final op probabilities") + shown, fontsize=10)
    return fig


def _outline_chosen(ax: Axes, arch: Architecture, labels: list[str], ops: list[str]) -> None:
    if arch.space.is_block:
        chosen = {f"{b.name}.op": b.op for b in arch.blocks}
    else:
        chosen = {edge_label(c.name, e.node, e.source): e.op for c in arch.cells for e in c.edges}
    for row, label in enumerate(labels):
        op = chosen.get(label)
        if op in ops:
            col = ops.index(op)
            ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="white", lw=1.5))


def _draw_pareto(
    ax: Axes, df: pd.DataFrame, x: str, y: str, label: str | None, minimize_x: bool, maximize_y: bool
) -> None:
    front = pareto_mask(df, x, y, minimize_x, maximize_y)
    on = df[front].sort_values(x)
    ax.plot(on[x], on[y], "-", color="black", lw=1, zorder=1, label="Pareto front")
    ax.scatter(on[x], on[y], s=60, facecolors="none", edgecolors="black", zorder=3)
    if label:
        for _, r in df.iterrows():
            ax.annotate(str(r[label]), (r[x], r[y]), textcoords="offset points", xytext=(4, 4), fontsize=7)


def plot_pareto(
    df: pd.DataFrame,
    x: str,
    y: str,
    label: str | None = None,
    minimize_x: bool = True,
    maximize_y: bool = True,
    title: str | None = None,
) -> Figure:
    """Scatter of ``y`` against ``x`` with the non-dominated points circled and connected."""
    fig, axes = new_figure(figsize=(5.5, 4.0))
    ax = axes[0, 0]
    ax.scatter(df[x], df[y], color="C0", zorder=2)
    _draw_pareto(ax, df, x, y, label, minimize_x, maximize_y)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend(fontsize=8)
    ax.set_title(title or f"{y} vs {x}")
    return fig


def plot_accuracy_vs_latency(df: pd.DataFrame, title: str | None = None) -> Figure:
    """Top-1 accuracy against measured latency of retrained architectures (columns ``name``, ``top1``,
    ``latency_ms``, ``params``): marker area grows with ``params``, points are annotated with name and
    parameter count, coloured by ``param_free_share`` when that column exists; the Pareto front is drawn."""
    fig, axes = new_figure(figsize=(6.0, 4.4))
    ax = axes[0, 0]
    params = df["params"].astype(float)
    sizes = 30 + 300 * params / params.max() if params.max() > 0 else 60
    if "param_free_share" in df.columns:
        points = ax.scatter(
            df["latency_ms"], df["top1"], s=sizes, c=df["param_free_share"], cmap="coolwarm_r", vmin=0, vmax=1
        )
        fig.colorbar(points, ax=ax, label="parameter-free share")
    else:
        ax.scatter(df["latency_ms"], df["top1"], s=sizes, color="C0", zorder=2)
    _draw_pareto(ax, df, "latency_ms", "top1", None, True, True)
    for _, r in df.iterrows():
        p = float(r["params"])
        size = f"{p / 1e6:.1f}M" if p >= 1e4 else f"{p:.0f}"
        ax.annotate(
            f"{r['name']} ({size})",
            (r["latency_ms"], r["top1"]),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=7,
        )
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("top-1 accuracy")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "accuracy vs latency")
    return fig
