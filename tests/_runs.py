"""Fabricated-but-valid search run directories (config.yaml, metrics.jsonl, found.json) for analysis tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pflnas.arch import save_architecture
from pflnas.arch.derive import derive_architecture
from pflnas.spaces import SpaceConfig, load_space

CELL = load_space("cell_v1").replace(init_channels=4, layers=3)  # cell0 normal, cell1+cell2 reduce
NB201 = load_space("nb201").replace(layers=1)
BLOCKS = load_space("resnet50_block").replace(skeleton={"depths": [1, 2], "widths": [4, 8], "stem_width": 8})
EPOCHS = 3


def _labels(space: SpaceConfig) -> list[tuple[str, str]]:
    return [(g, f"{g}.{k}") for g, _ in space.alpha_groups() for k in space.choice_keys()]


def make_probs(space: SpaceConfig, rng: np.random.Generator, favour: str | None = None, weight: float = 0.9):
    """Random probabilities per choice; ``favour`` gets ``weight`` wherever it is a candidate."""
    probs = {}
    for group, label in _labels(space):
        ops = list(space.group_ops(group))
        if favour in ops and len(ops) > 1:
            rest = (1 - weight) / (len(ops) - 1)
            probs[label] = {op: weight if op == favour else rest for op in ops}
        else:
            p = rng.dirichlet(np.ones(len(ops)))
            probs[label] = dict(zip(ops, p.tolist()))
    return probs


def write_run(
    path: Path,
    space: SpaceConfig,
    strategy: str = "darts",
    seed: int = 0,
    probs: dict | None = None,
    epochs_done: int = EPOCHS,
    finished: bool = True,
    live: dict[str, Any] | None = None,
    run_info: dict[str, Any] | None = None,
) -> Path:
    rng = np.random.default_rng(seed)
    probs = probs or make_probs(space, rng)
    path.mkdir(parents=True)
    config = {
        "space": {"name": space.name},
        "data": {"dataset": "cifar10"},
        "strategy": {"name": strategy},
        "run": {"epochs": EPOCHS, "seed": seed},
        "resolved_space": space.to_dict(),
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with (path / "metrics.jsonl").open("w") as fh:
        for epoch in range(epochs_done):
            row = {"epoch": epoch, "val_acc": 0.1 * (epoch + 1), "train_acc": 0.2, "mean_entropy": 1.0}
            row.update(probs=probs, epoch_time=2.0, param_free_share=0.5, **(live or {}))
            fh.write(json.dumps(row) + "\n")
    if run_info is not None:
        (path / "run.json").write_text(json.dumps(run_info))
    if finished:
        prov = {
            "strategy": strategy,
            "seed": seed,
            "dataset": "cifar10",
            "epochs": EPOCHS,
            "wall_time_s": 7.5,
        }
        save_architecture(derive_architecture(space, probs, prov), path / "found.json")
    return path


def make_study(root: Path) -> Path:
    """A study of cell_v1 runs (darts x 3 seeds conv-heavy, random x 3 seeds pool-heavy) + one unfinished."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "study.yaml").write_text("name: demo\n")
    for strategy, favour in (("darts", "conv_3x3"), ("random", "max_pool_3x3")):
        for seed in range(3):
            run_id = f"cell_v1-{strategy}-s{seed}"
            probs = make_probs(CELL, np.random.default_rng(seed), favour=favour, weight=0.6)
            info = {"run_id": run_id, "space": "cell_v1", "strategy": strategy, "seed": seed}
            write_run(root / "runs" / run_id, CELL, strategy, seed, probs, run_info={**info, "setting": "s1"})
    info = {"run_id": "unfinished", "space": "cell_v1", "strategy": "darts", "seed": 9, "setting": "s1"}
    write_run(root / "runs" / "unfinished", CELL, "darts", 9, epochs_done=1, finished=False, run_info=info)
    return root
