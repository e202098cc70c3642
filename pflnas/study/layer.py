"""The layer-level study (Han et al., ICLR 2022, Sec. 3): retrain homogeneous networks -- every edge or
block using one op -- with a short recipe, profile them, and set accuracy against measured latency and params.

A layer-study file has ``kind: layer``::

    kind: layer
    name: layer_study
    retrain: {recipe: quick, set: {schedule.epochs: 2}}       # what every retrain shares
    profile: {batch_size: 32, warmup: 3, repeats: 10}          # pflnas profile settings (latency, memory)
    grid:
      spaces: [cell_v1]
      ops: [conv_3x3, dw_conv_3x3, max_pool_3x3, avg_pool_3x3, skip_connect]
      reduce_op: null        # op for reduction cells / downsampling blocks (needed for identity in blocks)
      seeds: [0]

Each run ``{space}-{op}-s{seed}`` gets ``runs/<id>/arch.json`` (the homogeneous record), ``retrain/`` (a
``pflnas retrain`` run directory) and ``profile.json`` (``pflnas profile --json``). Complete runs are skipped,
interrupted retrains resumed. :func:`layer_results` turns the study directory into one table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pflnas.arch.homogeneous import homogeneous_architecture
from pflnas.arch.record import load_architecture, save_architecture
from pflnas.configs import from_dict, to_dict
from pflnas.errors import ConfigError, PflnasError
from pflnas.spaces import load_space
from pflnas.study.config import override_arg
from pflnas.train.recipe import list_recipes
from pflnas.utils_io import atomic_write_text


@dataclass(frozen=True)
class LayerRetrain:
    recipe: str = "quick"
    set: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerProfile:
    batch_size: int = 32
    warmup: int = 3
    repeats: int = 10
    threads: int | None = None


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
    retrain: LayerRetrain = field(default_factory=LayerRetrain)
    profile: LayerProfile = field(default_factory=LayerProfile)
    grid: LayerGrid = field(default_factory=LayerGrid)

    def runs(self) -> list[LayerRun]:
        return [
            LayerRun(f"{Path(space).stem}-{op}-s{seed}", space, op, self.grid.reduce_op, seed)
            for space in self.grid.spaces
            for op in self.grid.ops
            for seed in self.grid.seeds
        ]


@dataclass(frozen=True)
class LayerRun:
    run_id: str
    space: str
    op: str
    reduce_op: str | None
    seed: int


def load_layer_study(data: dict[str, Any], origin: str) -> LayerStudy:
    """Check a ``kind: layer`` study mapping; every problem is one ConfigError line."""
    study = from_dict(LayerStudy, data)
    if study.kind != "layer":
        raise ConfigError(f"{origin}: kind must be 'layer' here, got {study.kind!r}")
    if not study.grid.ops or not study.grid.spaces or not study.grid.seeds:
        raise ConfigError(f"{origin}: grid.spaces, grid.ops and grid.seeds must be non-empty lists")
    if study.retrain.recipe not in list_recipes() and not Path(study.retrain.recipe).is_file():
        raise ConfigError(
            f"{origin}: unknown recipe {study.retrain.recipe!r}; recipes: {', '.join(list_recipes())}"
        )
    for key in ("batch_size", "repeats"):
        if getattr(study.profile, key) < 1:
            raise ConfigError(f"{origin}: profile.{key} must be >= 1")
    for run in study.runs():  # every architecture must exist before anything trains
        homogeneous_architecture(load_space(run.space), run.op, run.reduce_op)
    return study


def _retrain_cmd(study: LayerStudy, run: LayerRun, run_dir: Path, extra: list[str]) -> list[str]:
    retrain = run_dir / "retrain"
    if (retrain / "last.pt").is_file():
        return [sys.executable, "-m", "pflnas", "retrain", "--resume", str(retrain)]
    sets = {**study.retrain.set, "run.seed": run.seed, "run.progress": False}
    cmd = [sys.executable, "-m", "pflnas", "retrain", "--arch", str(run_dir / "arch.json")]
    cmd += ["--recipe", study.retrain.recipe, "--out", str(retrain), "--overwrite", *extra]
    for key, value in sets.items():
        cmd += ["--set", override_arg(key, value)]
    return cmd


def _profile_cmd(study: LayerStudy, run_dir: Path, network: dict[str, Any], is_block: bool) -> list[str]:
    """Profile exactly the retrained network (its dataset, width, depth, class count and image size)."""
    p = study.profile
    cmd = [sys.executable, "-m", "pflnas", "profile", "--arch", str(run_dir / "arch.json"), "--json"]
    cmd += ["--dataset", network["dataset"], "--num-classes", str(network["num_classes"])]
    cmd += ["--image-size", str(network["image_size"])]
    if not is_block:
        cmd += ["--init-channels", str(network["init_channels"]), "--layers", str(network["layers"])]
    cmd += ["--batch-size", str(p.batch_size), "--warmup", str(p.warmup)]
    cmd += ["--repeats", str(p.repeats)] + (["--threads", str(p.threads)] if p.threads else [])
    return cmd


def _run(cmd: list[str], log: Path) -> None:
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise PflnasError(f"command failed with exit code {code}; see {log}")


def run_layer_study(
    study: LayerStudy,
    out: Path,
    data_dir: str | None = None,
    device: str | None = None,
    dry_run: bool = False,
) -> int:
    """Run (or with ``dry_run`` list) every retrain + profile of the study; returns the exit code."""
    extra = (["--data-dir", data_dir] if data_dir else []) + (["--device", device] if device else [])
    runs = study.runs()
    failed = []
    if not dry_run:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "study.yaml", yaml.safe_dump(to_dict(study), sort_keys=False))
    for i, run in enumerate(runs, 1):
        run_dir = out / "runs" / run.run_id
        done = (run_dir / "retrain" / "result.json").is_file() and (run_dir / "profile.json").is_file()
        status = (
            "skip (complete)"
            if done
            else "resume"
            if (run_dir / "retrain" / "last.pt").is_file()
            else "start"
        )
        if dry_run or done:
            print(f"[{i}/{len(runs)}] {run.run_id}: {status}")
            continue
        t0 = time.perf_counter()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            arch = homogeneous_architecture(load_space(run.space), run.op, run.reduce_op)
            save_architecture(arch, run_dir / "arch.json")
            log = run_dir / "log.txt"
            _run(_retrain_cmd(study, run, run_dir, extra), log)
            result = json.loads((run_dir / "retrain" / "result.json").read_text())
            profile = subprocess.run(
                _profile_cmd(study, run_dir, result["network"], arch.space.is_block),
                capture_output=True,
                text=True,
            )
            if profile.returncode != 0:
                raise PflnasError(f"profile failed: {profile.stderr.strip().splitlines()[-1:]}")
            atomic_write_text(run_dir / "profile.json", profile.stdout)
            took = time.perf_counter() - t0
            print(f"[{i}/{len(runs)}] {run.run_id}: done in {took:.0f} s, top-1 {result['top1']:.4f}")
        except PflnasError as exc:
            failed.append(run.run_id)
            print(f"[{i}/{len(runs)}] {run.run_id}: FAILED ({exc})")
    if failed:
        print(
            f"{len(failed)} run(s) failed: {', '.join(failed)}; fix and re-run the same command to continue"
        )
        return 1
    return 0


def layer_results(study_dir: str | Path) -> list[dict[str, Any]]:
    """One row per complete run of a layer study: op, space, seed, top1, top5, params, MACs, latency
    (median ms at batch 1), throughput (images/s), parameter-free share. Reads only the run directories."""
    rows = []
    for run_dir in sorted((Path(study_dir) / "runs").iterdir()):
        result_path, profile_path = run_dir / "retrain" / "result.json", run_dir / "profile.json"
        if not (result_path.is_file() and profile_path.is_file()):
            continue
        arch = load_architecture(run_dir / "arch.json")
        result = json.loads(result_path.read_text())
        prof = json.loads(profile_path.read_text())
        rows.append(
            {
                "name": run_dir.name,
                "op": arch.provenance.get("op"),
                "space": arch.space.name,
                "seed": result.get("seed", int(run_dir.name.rsplit("-s", 1)[-1])),
                "top1": result["top1"],
                "top5": result.get("top5"),
                "epochs": result["epochs"],
                "params": prof["params"],
                "macs": prof["macs"],
                "latency_ms": prof.get("latency", {}).get("median_ms"),
                "throughput": prof.get("throughput", {}).get("images_per_s"),
                "param_free_share": arch.param_free_share(),
            }
        )
    return rows
