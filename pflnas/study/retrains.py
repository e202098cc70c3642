"""Retrain-and-profile runs: what the study kinds that retrain fixed networks (layer, swap) share.

A run directory ``runs/<run_id>/`` holds ``run.json`` (which run it is), ``arch.json``, ``retrain/`` (a
``pflnas retrain`` run directory) and ``profile.json`` (``pflnas profile --json`` of exactly the retrained
network). A run with both results is complete and skipped, one with ``retrain/last.pt`` resumed, any other
started; a directory whose run.json names another run is refused before anything runs (or replaced with
``overwrite``). Retrains may run ``jobs`` at a time; profiles run one at a time after them, so that measured
latency is not disturbed by a concurrent retrain.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pflnas.arch.record import Architecture, save_architecture
from pflnas.config.loader import build_config
from pflnas.errors import ConfigError, PflnasError
from pflnas.models import resolve_network_config
from pflnas.parsing import parse_json
from pflnas.rundir import mark
from pflnas.study.config import override_arg
from pflnas.train.recipe import RetrainConfig, recipe_layer, validate_retrain_config
from pflnas.utils_io import atomic_write_json, atomic_write_text, open_log, read_regular_text

RUN_RECORD, ARCH, RETRAIN, PROFILE, LOG = "run.json", "arch.json", "retrain", "profile.json", "log.txt"
# retrain keys a study may not set, and why
RESERVED = {
    "run.seed": "the study sets it; list the seeds in the study file",
    "run.device": "it depends on the machine; pass --device to pflnas study",
    "data.data_dir": "it depends on the machine; pass --data-dir to pflnas study (or set PFLNAS_DATA)",
}


@dataclass(frozen=True)
class RetrainSettings:
    """What every retrain of a study shares: a recipe and ``--set`` overrides."""

    recipe: str = "quick"
    set: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfileSettings:
    """``pflnas profile`` settings (latency at batch 1, throughput at ``batch_size``)."""

    batch_size: int = 32
    warmup: int = 3
    repeats: int = 10
    threads: int | None = None


@dataclass(frozen=True)
class RetrainJob:
    """One network retrained with one seed; ``record`` (JSON-ready) is what run.json holds."""

    run_id: str
    arch: Architecture
    seed: int
    record: dict[str, Any]


def retrain_config(retrain: RetrainSettings, where: str) -> RetrainConfig:
    """The recipe with the study's overrides, checked as ``pflnas retrain`` checks it."""
    for key in retrain.set:
        if key in RESERVED:
            raise ConfigError(f"{where}: retrain.set: {key} cannot be set in a study ({RESERVED[key]})")
    try:
        cfg = build_config(
            RetrainConfig,
            [recipe_layer(retrain.recipe)],
            [override_arg(k, v) for k, v in retrain.set.items()],
        )
        validate_retrain_config(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{where}: retrain: {exc}") from None
    return cfg


def check_settings(
    retrain: RetrainSettings, profile: ProfileSettings, archs: Iterable[Architecture], where: str
) -> RetrainConfig:
    """Check the recipe, the overrides, the profile settings and that every network can be built."""
    cfg = retrain_config(retrain, where)
    for key in ("batch_size", "repeats"):
        if getattr(profile, key) < 1:
            raise ConfigError(f"{where}: profile.{key} must be >= 1")
    m = cfg.model
    for arch in archs:
        try:
            resolve_network_config(
                arch,
                dataset=cfg.data.dataset,
                init_channels=m.init_channels,
                layers=m.layers,
                auxiliary=m.auxiliary,
                drop_path=m.drop_path,
            )
        except PflnasError as exc:
            raise ConfigError(f"{where}: a {arch.space.name} network with this recipe: {exc}") from None
    return cfg


def _retrain_cmd(retrain: RetrainSettings, job: RetrainJob, run_dir: Path, extra: list[str]) -> list[str]:
    out = run_dir / RETRAIN
    if (out / "last.pt").is_file():
        return [sys.executable, "-m", "pflnas", "retrain", "--resume", str(out)]
    cmd = [sys.executable, "-m", "pflnas", "retrain", "--arch", str(run_dir / ARCH)]
    cmd += ["--recipe", retrain.recipe, "--out", str(out), "--overwrite", *extra]
    for key, value in {**retrain.set, "run.seed": job.seed, "run.progress": False}.items():
        cmd += ["--set", override_arg(key, value)]
    return cmd


def _profile_cmd(p: ProfileSettings, run_dir: Path, network: dict[str, Any], is_block: bool) -> list[str]:
    """Profile exactly the retrained network (its dataset, width, depth, class count and image size)."""
    cmd = [sys.executable, "-m", "pflnas", "profile", "--arch", str(run_dir / ARCH), "--json"]
    cmd += ["--dataset", network["dataset"], "--num-classes", str(network["num_classes"])]
    cmd += ["--image-size", str(network["image_size"])]
    if not is_block:
        cmd += ["--init-channels", str(network["init_channels"]), "--layers", str(network["layers"])]
    cmd += ["--batch-size", str(p.batch_size), "--warmup", str(p.warmup)]
    cmd += ["--repeats", str(p.repeats)] + (["--threads", str(p.threads)] if p.threads else [])
    return cmd


def _run_logged(cmd: list[str], log: Path) -> None:
    with open_log(log) as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise PflnasError(f"command failed with exit code {code}; see {log}")


def _normalised(data: Any) -> Any:
    return json.loads(json.dumps(data))


def _status(run_dir: Path) -> str:
    if (run_dir / RETRAIN / "result.json").is_file() and (run_dir / PROFILE).is_file():
        return "skip (complete)"
    return "resume" if (run_dir / RETRAIN / "last.pt").is_file() else "start"


def plan_jobs(jobs: list[RetrainJob], out: Path, overwrite: bool) -> list[tuple[RetrainJob, str]]:
    """Each job with its status; a directory holding another run raises unless ``overwrite``."""
    plan = []
    for job in jobs:
        run_dir = out / "runs" / job.run_id
        try:
            held = parse_json(read_regular_text(run_dir / RUN_RECORD, "record"), RUN_RECORD)
        except (PflnasError, OSError, ValueError):
            held = None
        if held is not None and held != _normalised(job.record):
            if not overwrite:
                raise ConfigError(
                    f"{run_dir} holds another run (its {RUN_RECORD} differs from the study's); "
                    "use another --out, or --overwrite to replace it"
                )
            plan.append((job, "start (replaces another run)"))
            continue
        plan.append((job, _status(run_dir)))
    return plan


def _retrain(job: RetrainJob, status: str, run_dir: Path, retrain: RetrainSettings, extra: list[str]) -> None:
    if status.startswith("start (replaces"):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / RUN_RECORD, job.record)
    if not (run_dir / RETRAIN / "result.json").is_file():
        save_architecture(job.arch, run_dir / ARCH)
        (run_dir / RETRAIN).mkdir(exist_ok=True)
        mark(run_dir / RETRAIN, "retrain")  # the study made it: its retrain may replace what is there
        _run_logged(_retrain_cmd(retrain, job, run_dir, extra), run_dir / LOG)


def _profile(job: RetrainJob, run_dir: Path, profile: ProfileSettings) -> dict[str, Any]:
    result = read_record(run_dir / RETRAIN / "result.json")
    cmd = _profile_cmd(profile, run_dir, result["network"], job.arch.space.is_block)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise PflnasError(f"profile failed: {done.stderr.strip().splitlines()[-1:]}")
    atomic_write_text(run_dir / PROFILE, done.stdout)
    return result


def run_jobs(
    jobs: list[RetrainJob],
    out: Path,
    retrain: RetrainSettings,
    profile: ProfileSettings,
    *,
    extra: tuple[str, ...] = (),
    parallel: int = 1,
    dry_run: bool = False,
    overwrite: bool = False,
) -> int:
    """Retrain (``parallel`` at a time) and then profile every job; returns the exit code (1: some failed).
    ``extra`` are flags for every ``pflnas retrain`` (``--data-dir``, ``--device``)."""
    plan = plan_jobs(jobs, out, overwrite)
    n, failed = len(plan), {}
    todo = [(i, job, status) for i, (job, status) in enumerate(plan, 1) if not status.startswith("skip")]
    for i, (job, status) in enumerate(plan, 1):
        if dry_run or status.startswith("skip"):
            print(f"[{i}/{n}] {job.run_id}: {status}", flush=True)
    if dry_run:
        return 0
    took: dict[str, float] = {}

    def retrain_one(item: tuple[int, RetrainJob, str]) -> None:
        i, job, status = item
        print(f"[{i}/{n}] {job.run_id}: {status}", flush=True)
        t0 = time.perf_counter()
        try:
            _retrain(job, status, out / "runs" / job.run_id, retrain, list(extra))
        except PflnasError as exc:
            failed[job.run_id] = exc
        took[job.run_id] = time.perf_counter() - t0

    pool = ThreadPoolExecutor(max_workers=max(1, parallel))
    try:
        for future in [pool.submit(retrain_one, item) for item in todo]:
            future.result()
    finally:  # on Ctrl-C start nothing new; the running retrains checkpoint on the same signal
        pool.shutdown(wait=True, cancel_futures=True)
    for i, job, _ in todo:  # one at a time: latency is measured on an otherwise idle machine
        if job.run_id in failed:
            print(f"[{i}/{n}] {job.run_id}: FAILED ({failed[job.run_id]})", flush=True)
            continue
        try:
            result = _profile(job, out / "runs" / job.run_id, profile)
        except PflnasError as exc:
            failed[job.run_id] = exc
            print(f"[{i}/{n}] {job.run_id}: FAILED ({exc})", flush=True)
            continue
        wall = took[job.run_id]
        print(f"[{i}/{n}] {job.run_id}: done (retrain {wall:.0f} s), top-1 {result['top1']:.4f}", flush=True)
    if failed:
        names = ", ".join(failed)
        print(f"{len(failed)} run(s) failed: {names}; fix and re-run the same command to continue")
        return 1
    return 0


def job_results(run_dir: Path) -> dict[str, Any] | None:
    """A complete run's numbers: final-epoch top-1/top-5 (never the best epoch), epochs, seed, params,
    MACs, latency (median ms at batch 1) and throughput; None when the run is not complete."""
    result_path, profile_path = run_dir / RETRAIN / "result.json", run_dir / PROFILE
    if not (os.path.lexists(result_path) and os.path.lexists(profile_path)):
        return None
    result, prof = read_record(result_path), read_record(profile_path)
    try:
        record = parse_json(read_regular_text(run_dir / RUN_RECORD, "record"), RUN_RECORD)
    except (PflnasError, OSError, ValueError):
        record = {}
    try:
        return {
            "name": run_dir.name,
            "seed": record.get("seed", result.get("seed")),
            "top1": result["top1"],
            "top5": result.get("top5"),
            "epochs": result["epochs"],
            "params": prof["params"],
            "macs": prof["macs"],
            "latency_ms": prof.get("latency", {}).get("median_ms"),
            "throughput": prof.get("throughput", {}).get("images_per_s"),
        }
    except (KeyError, AttributeError) as exc:
        raise PflnasError(f"{result_path} or {profile_path} is damaged (no {exc}); {_REDO}") from None


_REDO = "delete it and re-run the study to redo that run"


def read_record(path: Path) -> dict[str, Any]:
    """A finished run's JSON record (result.json, profile.json); a damaged one (cut short, not JSON, not a
    regular file) is one line naming it and what to do, never a traceback in the report."""
    try:
        data = parse_json(read_regular_text(path, "record"), str(path))
    except PflnasError as exc:
        raise PflnasError(f"{exc} (damaged); {_REDO}") from None
    if not isinstance(data, dict):
        raise PflnasError(f"{path} is damaged (not a JSON object); {_REDO}")
    return data
