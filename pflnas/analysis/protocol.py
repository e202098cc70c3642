"""What each arm of a study actually ran: budget, data, network, seeds, and how far that is from DARTS'.

Read from the runs' own resolved ``config.yaml`` (nothing is assumed), so a report states its protocol next
to its results and a reader sees at once how small a budget a share came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from pflnas.analysis.load import RunData

CIFAR10_TRAIN = 50_000
# The DARTS CIFAR-10 search (Liu et al., ICLR 2019): 50 epochs, 25k images for weights, 25k for α,
# batch 64, C=16, 8 cells; the reference the budget ratio is measured against.
DARTS_EPOCHS, DARTS_WEIGHT_IMAGES = 50, 25_000
PROTOCOL_COLUMNS = [
    *["runs", "seeds", "dataset", "epochs", "images", "weight_images", "batch_size"],
    *["init_channels", "layers", "budget_vs_darts"],
]


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    sub = config.get(name)
    return sub if isinstance(sub, dict) else {}


def run_protocol(run: RunData) -> dict[str, Any]:
    """One run's budget: epochs, images used (weights + α), weight images, batch, width and depth."""
    data, space = _section(run.config, "data"), _section(run.config, "resolved_space")
    epochs = _section(run.config, "run").get("epochs")
    subset = data.get("subset")
    images = subset if isinstance(subset, int) else (CIFAR10_TRAIN if run.dataset == "cifar10" else None)
    portion = data.get("train_portion", 0.5)
    weights = int(portion * images) if isinstance(images, int) and isinstance(portion, float) else None
    seen = epochs * weights if isinstance(epochs, int) and weights else None
    return {
        "dataset": run.dataset or "–",
        "epochs": epochs,
        "images": images,
        "weight_images": weights,
        "batch_size": data.get("batch_size"),
        "init_channels": space.get("init_channels"),
        "layers": space.get("layers"),
        "budget_vs_darts": seen / (DARTS_EPOCHS * DARTS_WEIGHT_IMAGES) if seen else None,
    }


def protocol_table(runs: Sequence[RunData], by: Sequence[str]) -> pd.DataFrame:
    """One row per group of runs (``by``: run attributes such as strategy, alpha_mode, setting) with the
    protocol its runs share; a field that differs between the group's runs reads ``"varies"``."""
    rows: dict[tuple[Any, ...], list[RunData]] = {}
    for run in runs:
        rows.setdefault(tuple(getattr(run, c) for c in by), []).append(run)
    out = []
    for key, group in sorted(rows.items(), key=lambda kv: tuple(map(str, kv[0]))):
        protocols = [run_protocol(r) for r in group]
        merged = {k: _one(p[k] for p in protocols) for k in protocols[0]}
        seeds = sorted(r.seed for r in group if r.seed is not None)
        row = {**dict(zip(by, key)), "runs": len(group), "seeds": ",".join(map(str, seeds)) or "–", **merged}
        out.append(row)
    return pd.DataFrame(out, columns=[*by, *PROTOCOL_COLUMNS])


def _one(values: Any) -> Any:
    distinct = {repr(v): v for v in values}
    return next(iter(distinct.values())) if len(distinct) == 1 else "varies"
