"""The layer-level study (Han et al., ICLR 2022, Sec. 3): retrain homogeneous networks -- every edge or
block using one op -- with a short recipe, profile them, and set accuracy against measured latency and params.

Homogeneous networks isolate what one op costs and buys, independent of any search. Every run is an
ordinary ``pflnas retrain`` + ``pflnas profile`` directory, so complete runs are skipped and interrupted
retrains resumed, and :func:`layer_results` reads the study from the run directories alone. The file
format is on :func:`load_layer_study`, the run layout on :func:`run_layer_study`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pflnas.arch.homogeneous import homogeneous_architecture
from pflnas.arch.record import load_architecture
from pflnas.config.limits import check_grid_size
from pflnas.config.loader import from_dict, to_dict
from pflnas.errors import ConfigError
from pflnas.spaces import load_space
from pflnas.study.retrains import (
    ARCH,
    ProfileSettings,
    RetrainJob,
    RetrainSettings,
    check_settings,
    job_results,
    run_jobs,
)
from pflnas.utils_io import atomic_write_text


@dataclass(frozen=True)
class LayerGrid:
    spaces: tuple[str, ...] = ("cell_v1",)
    ops: tuple[str, ...] = ()
    reduce_op: str | None = None
    seeds: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class LayerStudy:
    kind: str = "layer"
    name: str = "layer_study"
    description: str = ""
    retrain: RetrainSettings = field(default_factory=RetrainSettings)
    profile: ProfileSettings = field(default_factory=ProfileSettings)
    grid: LayerGrid = field(default_factory=LayerGrid)

    def runs(self) -> list[LayerRun]:
        return [
            LayerRun(f"{Path(space).stem}-{op}-s{seed}", space, op, self.grid.reduce_op, seed)
            for space in self.grid.spaces
            for op in self.grid.ops
            for seed in self.grid.seeds
        ]

    def jobs(self) -> list[RetrainJob]:
        """Every run as a retrain job (its homogeneous architecture built from the space)."""
        return [
            RetrainJob(
                run.run_id,
                homogeneous_architecture(load_space(run.space), run.op, run.reduce_op),
                run.seed,
                {**to_dict(run), "retrain": to_dict(self.retrain)},
            )
            for run in self.runs()
        ]


@dataclass(frozen=True)
class LayerRun:
    run_id: str
    space: str
    op: str
    reduce_op: str | None
    seed: int


def load_layer_study(data: dict[str, Any], origin: str) -> LayerStudy:
    """Check a ``kind: layer`` study mapping; every problem is one ConfigError line.

    The format::

        kind: layer
        name: layer_study
        retrain: {recipe: quick, set: {schedule.epochs: 2}}       # what every retrain shares
        profile: {batch_size: 32, warmup: 3, repeats: 10}          # pflnas profile settings (latency, memory)
        grid:
          spaces: [cell_v1]
          ops: [conv_3x3, dw_conv_3x3, max_pool_3x3, avg_pool_3x3, skip_connect]
          reduce_op: null  # op for reduction cells / downsampling blocks (needed for identity in blocks)
          seeds: [0]
    """
    study = from_dict(LayerStudy, data)
    if study.kind != "layer":
        raise ConfigError(f"{origin}: kind must be 'layer' here, got {study.kind!r}")
    if not study.grid.ops or not study.grid.spaces or not study.grid.seeds:
        raise ConfigError(f"{origin}: grid.spaces, grid.ops and grid.seeds must be non-empty lists")
    g = study.grid
    try:
        check_grid_size("retrains", spaces=len(g.spaces), ops=len(g.ops), seeds=len(g.seeds))
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    # every architecture must exist, and build with the recipe, before anything trains
    check_settings(study.retrain, study.profile, [job.arch for job in study.jobs()], origin)
    return study


def run_layer_study(
    study: LayerStudy,
    out: Path,
    data_dir: str | None = None,
    device: str | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
) -> int:
    """Run (or with ``dry_run`` list) every retrain + profile of the study; returns the exit code.

    Each run ``{space}-{op}-s{seed}`` gets ``runs/<id>/arch.json`` (the homogeneous record), ``retrain/``
    (a ``pflnas retrain`` run directory) and ``profile.json`` (``pflnas profile --json``). Complete runs are
    skipped, interrupted retrains resumed."""
    extra = (("--data-dir", data_dir) if data_dir else ()) + (("--device", device) if device else ())
    if not dry_run:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "study.yaml", yaml.safe_dump(to_dict(study), sort_keys=False))
    return run_jobs(
        study.jobs(), out, study.retrain, study.profile, extra=extra, dry_run=dry_run, overwrite=overwrite
    )


def layer_results(study_dir: str | Path) -> list[dict[str, Any]]:
    """One row per complete run of a layer study: op, space, seed, top1, top5, params, MACs, latency
    (median ms at batch 1), throughput (images/s), parameter-free share. Reads only the run directories."""
    rows = []
    for run_dir in sorted((Path(study_dir) / "runs").iterdir()):
        row = job_results(run_dir)
        if row is None:
            continue
        arch = load_architecture(run_dir / ARCH)
        if row["seed"] is None:  # runs from before run.json
            row["seed"] = int(run_dir.name.rsplit("-s", 1)[-1])
        rows.append(
            {
                **row,
                "op": arch.provenance.get("op"),
                "space": arch.space.name,
                "param_free_share": arch.param_free_share(),
            }
        )
    return rows
