"""The swap study: retrain found architectures beside single-choice counterfactuals, paired by seed.

"A parameter-free op wins" in a found.json means it had the largest α. This study tests the pick by
accuracy: it flips chosen picks between the parameter-free and the trainable family
(:mod:`pflnas.arch.counterfactual`, never by the accuracy reported) and retrains the original and every
counterfactual with the same recipe and the same seeds, so differences are paired. Runs go seed by seed,
so an interrupted study holds whole seeds. The file format is on :func:`load_swap_study`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pflnas.arch.counterfactual import SWAP_KINDS, Swap, apply_swap, possible_swaps, select_swaps
from pflnas.arch.record import Architecture, load_architecture
from pflnas.config.limits import check_grid_size
from pflnas.config.loader import from_dict, to_dict
from pflnas.device import resolve_device
from pflnas.errors import ConfigError, PflnasError
from pflnas.study.retrains import (
    ARCH,
    RUN_RECORD,
    ProfileSettings,
    RetrainJob,
    RetrainSettings,
    check_settings,
    job_results,
    read_record,
    run_jobs,
)
from pflnas.study.runner import threads_per_run
from pflnas.utils_io import atomic_write_text

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ORIGINAL = "orig"


@dataclass(frozen=True)
class SwapStudy:
    kind: str = "swap"
    name: str = "swap_study"
    description: str = ""
    archs: tuple[str, ...] = ()
    swaps: str = "all"
    max_swaps: int | None = None
    seeds: tuple[int, ...] = (0,)
    jobs: int = 1
    retrain: RetrainSettings = field(default_factory=RetrainSettings)
    profile: ProfileSettings = field(default_factory=ProfileSettings)


@dataclass(frozen=True)
class SwapArch:
    """One found architecture of the study and the swaps made to it."""

    label: str  # the file's stem: part of the run ids
    path: Path
    arch: Architecture
    swaps: tuple[Swap, ...]
    note: str = ""  # why it has no swap


@dataclass(frozen=True)
class SwapPlan:
    study: SwapStudy
    archs: tuple[SwapArch, ...]

    def jobs(self) -> list[RetrainJob]:
        """Every retrain, seed by seed: per architecture the original, then its counterfactuals.

        Run directories ``{arch}-orig-s{seed}`` and ``{arch}-{swap}-s{seed}`` are retrain-and-profile runs
        (:mod:`pflnas.study.retrains`).
        """
        out = []
        for seed in self.study.seeds:
            for a in self.archs:
                if not a.swaps:
                    continue
                for swap in (None, *a.swaps):
                    arch = a.arch if swap is None else apply_swap(a.arch, swap)
                    which = ORIGINAL if swap is None else swap.name
                    record = {
                        "run_id": f"{a.label}-{which}-s{seed}",
                        "arch": a.label,
                        "arch_sha256": _digest(arch),
                        "swap": None if swap is None else swap.record(),
                        "seed": seed,
                        "retrain": to_dict(self.study.retrain),
                    }
                    out.append(RetrainJob(record["run_id"], arch, seed, record))
        return out


def _digest(arch: Architecture) -> str:
    return hashlib.sha256(json.dumps(arch.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _arch_files(entries: tuple[str, ...], base: Path, origin: str) -> list[Path]:
    """The found.json files named by ``archs`` (paths or globs, relative to the study file)."""
    files: list[Path] = []
    for i, entry in enumerate(entries):
        path = Path(entry).expanduser()
        path = Path(os.path.normpath(path if path.is_absolute() else base / path))
        if glob.has_magic(str(path)):
            matched = sorted(Path(p) for p in glob.glob(str(path)))
            if not matched:
                raise ConfigError(f"{origin}: archs[{i}] {entry!r} matches no file")
            files += matched
        elif not path.is_file():
            raise ConfigError(f"{origin}: archs[{i}] {entry!r}: no such file ({path})")
        else:
            files.append(path)
    return files


def _load_arch(path: Path, study: SwapStudy, origin: str) -> SwapArch:
    try:
        arch = load_architecture(path)
    except PflnasError as exc:
        raise ConfigError(f"{origin}: archs: {exc}") from None
    label = path.parent.name if path.stem == "found" else path.stem  # runs/<run_id>/found.json
    if not _NAME.match(label):
        raise ConfigError(
            f"{origin}: {path}: the file name {label!r} becomes part of run ids; use letters, digits, "
            "'_', '-' or '.'"
        )
    every = possible_swaps(arch)
    chosen = select_swaps(every, study.swaps, study.max_swaps)
    note = ""
    if not chosen:
        pf = sum(s.param_free_pick for s in every)
        note = (
            f"no swap with swaps: {study.swaps} ({len(every)} swappable choices, {pf} parameter-free picks, "
            f"{len(every) - pf} trainable)"
        )
    return SwapArch(label, path, arch, tuple(chosen), note)


def load_swap_study(data: dict[str, Any], origin: str) -> SwapPlan:
    """Check a ``kind: swap`` study mapping and build its swaps; every problem is one ConfigError line.

    The format::

        kind: swap
        name: swap_quick
        archs: [../archs/quick_cell_v1_s0.json]   # found.json files or globs, relative to this file;
                                                  # each is named by its stem (found.json: by its folder)
        swaps: all            # all | param_free | trainable: which picks to flip
        max_swaps: 3          # per architecture, evenly spaced in network order (null: every one)
        seeds: [0, 1, 2]      # the unit of replication: original and counterfactuals share each seed
        jobs: 2               # retrains at a time (profiles run one at a time afterwards)
        retrain: {recipe: quick, set: {schedule.epochs: 1}}
        profile: {batch_size: 8, warmup: 2, repeats: 5}

    The replacement op is the most probable op of the other family at that stride
    (:func:`pflnas.arch.counterfactual.best_replacement`).
    """
    try:
        study = from_dict(SwapStudy, data)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    if study.kind != "swap":
        raise ConfigError(f"{origin}: kind must be 'swap' here, got {study.kind!r}")
    if not _NAME.match(study.name):
        raise ConfigError(f"{origin}: name {study.name!r} must be letters, digits, '_', '-' or '.'")
    if not study.archs:
        raise ConfigError(f"{origin}: archs is empty; list found.json files (or globs)")
    if not study.seeds or len(set(study.seeds)) != len(study.seeds) or min(study.seeds) < 0:
        raise ConfigError(f"{origin}: seeds must be a non-empty list of distinct integers >= 0")
    if study.swaps not in SWAP_KINDS:
        raise ConfigError(f"{origin}: swaps must be one of {', '.join(SWAP_KINDS)}, got {study.swaps!r}")
    if study.max_swaps is not None and study.max_swaps < 1:
        raise ConfigError(f"{origin}: max_swaps must be >= 1 (or null for every swap)")
    if study.jobs < 1:
        raise ConfigError(f"{origin}: jobs must be >= 1, got {study.jobs}")
    files = _arch_files(study.archs, Path(origin).parent, origin)
    try:  # each found.json is retrained at least once per seed, beside its swaps
        check_grid_size("retrains", found_json_files=len(files), seeds=len(study.seeds))
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    archs = tuple(_load_arch(path, study, origin) for path in files)
    labels = Counter(a.label for a in archs)
    twice = sorted(x for x, n in labels.items() if n > 1)
    if twice:
        raise ConfigError(
            f"{origin}: two found.json files are both named {twice[0]!r} (a file's stem, or its folder's "
            "name for found.json); rename one"
        )
    if not any(a.swaps for a in archs):
        raise ConfigError(f"{origin}: no swap possible: " + "; ".join(f"{a.path}: {a.note}" for a in archs))
    check_settings(study.retrain, study.profile, [a.arch for a in archs if a.swaps], origin)
    return SwapPlan(study, archs)


def run_swap_study(
    plan: SwapPlan,
    out: Path,
    *,
    data_dir: str | None = None,
    device: str | None = None,
    jobs: int | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
) -> int:
    """Run (or with ``dry_run`` list) every retrain and profile of the study; returns the exit code."""
    study = plan.study
    parallel = study.jobs if jobs is None else jobs
    if parallel < 1:
        raise ConfigError(f"--jobs must be >= 1, got {parallel}")
    if data_dir and not Path(data_dir).expanduser().exists():
        raise ConfigError(f"--data-dir {data_dir} does not exist; point it at the data")
    if device:
        resolve_device(device)
    retrain = study.retrain
    if "run.threads" not in retrain.set:  # concurrent retrains share the cores
        retrain = RetrainSettings(retrain.recipe, {"run.threads": threads_per_run(parallel), **retrain.set})
    extra = (("--data-dir", data_dir) if data_dir else ()) + (("--device", device) if device else ())
    runs = plan.jobs()
    print(
        f"swap study {study.name}: {len(runs)} retrains in {out} ({len(study.seeds)} seed(s), "
        f"{parallel} at a time)" + (" (dry run: nothing is run)" if dry_run else "")
    )
    for a in plan.archs:
        print(f"  {a.label} ({a.arch.space.name}): {len(a.swaps)} swap(s){'; ' + a.note if a.note else ''}")
        for s in a.swaps:
            print(f"    {s.label}: {s.old_op} -> {s.new_op} (stride {s.stride}, by {s.rule})")
    if not dry_run:
        out.mkdir(parents=True, exist_ok=True)
        record = {**to_dict(study), "arch_files": [str(a.path) for a in plan.archs]}
        atomic_write_text(out / "study.yaml", yaml.safe_dump(record, sort_keys=False))
    return run_jobs(
        runs,
        out,
        retrain,
        study.profile,
        extra=extra,
        parallel=parallel,
        dry_run=dry_run,
        overwrite=overwrite,
    )


def swap_results(study_dir: str | Path) -> list[dict[str, Any]]:
    """One row per complete run of a swap study: the architecture, the swap (empty for the original), the
    seed, final-epoch top-1, params, MACs, latency. Reads only the run directories."""
    rows = []
    runs = Path(study_dir) / "runs"
    for run_dir in sorted(runs.iterdir()) if runs.is_dir() else []:
        row = job_results(run_dir)
        if row is None:
            continue
        record = read_record(run_dir / RUN_RECORD)
        swap = record.get("swap") or {}
        arch = load_architecture(run_dir / ARCH)
        rows.append(
            {
                **row,
                "arch": record["arch"],
                "space": arch.space.name,
                "context": arch.space.context,
                "swap": Swap(**swap).name if swap else ORIGINAL,
                "label": swap.get("label"),
                "old_op": swap.get("old_op"),
                "new_op": swap.get("new_op"),
                "stride": swap.get("stride"),
                "param_free_pick": swap.get("param_free_pick"),
                "rule": swap.get("rule"),
                "p_old": swap.get("p_old"),
                "p_new": swap.get("p_new"),
            }
        )
    return rows
