"""Figures of the NAS-Bench-201 ground truth: per-edge op wins, and accuracy against parameters with the
Pareto front coloured by parameter-free share (the chance rate marked on the colour bar)."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from pflnas.analysis.figures import PARAM_FREE_ACCENT, TRAINABLE_ACCENT, new_figure

BELOW = 80.0  # accuracy (%) under which the scatter does not draw cells (the count is stated)


def op_wins_figure(edges: dict[str, dict[str, Any]], threshold: float) -> Figure:
    """Two panels per edge: the share of contexts the best parameter-free op wins, and the mean gap."""
    labels = list(edges)
    wins = [edges[k]["win_fraction"] for k in labels]
    delta = [edges[k]["mean_delta_pp"] for k in labels]
    fig, axes = new_figure(1, 2, figsize=(9.0, 3.6))
    left, right = axes[0]
    left.bar(labels, wins, color=PARAM_FREE_ACCENT)
    left.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="half of the contexts")
    left.set_ylim(0, 1)
    left.set_ylabel("share of contexts the param-free op wins", fontsize=8)
    left.legend(fontsize=8)
    right.bar(labels, delta, color=[PARAM_FREE_ACCENT if d > 0 else TRAINABLE_ACCENT for d in delta])
    right.axhline(0.0, color="black", linewidth=0.8)
    right.set_ylabel("mean gap, best param-free - best trainable (pp)", fontsize=8)
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=30)
    n = sorted({edges[k]["contexts"] for k in labels})
    fig.suptitle(
        f"NAS-Bench-201: best parameter-free vs best trainable op per edge "
        f"({'/'.join(map(str, n))} contexts; all-<= {threshold}% contexts left out)",
        fontsize=9,
    )
    return fig


def pareto_figure(
    params: np.ndarray, accuracy: np.ndarray, front: np.ndarray, shares: np.ndarray, chance: float
) -> Figure:
    """Every cell's accuracy against its network's parameters; the front coloured by parameter-free share."""
    fig, axes = new_figure(figsize=(6.4, 4.4))
    ax = axes[0, 0]
    shown = accuracy >= BELOW
    ax.scatter(params[shown] / 1e6, accuracy[shown], s=3, color="#cccccc", label="all cells", rasterized=True)
    on = front & shown
    points = ax.scatter(
        params[on] / 1e6,
        accuracy[on],
        s=28,
        c=np.nan_to_num(shares[on], nan=0.0),
        cmap="coolwarm_r",
        vmin=0,
        vmax=1,
        edgecolors="black",
        linewidths=0.5,
        zorder=3,
        label="Pareto front",
    )
    order = np.argsort(params[on])
    ax.plot(params[on][order] / 1e6, accuracy[on][order], color="black", linewidth=0.6, zorder=2)
    bar = fig.colorbar(points, ax=ax, label=f"parameter-free share of the cell (dashed: chance {chance:.2f})")
    bar.ax.axhline(chance, color="black", linestyle="--", linewidth=1.5)
    ax.set_xlabel("parameters (M), NB201 network C=16, 5 cells per stage")
    ax.set_ylabel("CIFAR-10 test accuracy (%)")
    hidden = int((~shown).sum())
    ax.set_title(
        f"{len(params):,} cells ({hidden:,} below {BELOW:.0f}% not drawn); front: {int(front.sum())}",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="lower right")
    return fig
