"""Read search run directories and study directories into :class:`RunData` records.

A run directory holds ``config.yaml``, ``metrics.jsonl`` and, once finished, ``found.json`` (and, inside a
study, the study runner's ``run.json``). A study directory holds ``study.yaml`` and ``runs/<run_id>/``.
Nothing here imports training code: the run directory is the whole interface.
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pflnas.arch.record import Architecture, load_architecture
from pflnas.errors import PflnasError
from pflnas.parsing import parse_json, parse_yaml
from pflnas.spaces.config import SpaceConfig, space_from_dict
from pflnas.utils_io import file_kind, open_regular

RUN_FILES = ("config.yaml", "metrics.jsonl", "found.json")
DAMAGED = "damaged:"  # how an issue naming a corrupt file (not a missing or unfinished one) begins


class IncompleteRunWarning(UserWarning):
    """A run directory could not be read completely; its ``RunData.issues`` say why."""


@dataclass(frozen=True)
class RunData:
    """One search run as read from its directory.

    ``complete`` is True when ``found.json`` loaded and ``metrics.jsonl`` has every epoch the config asked
    for without a torn line; otherwise ``issues`` says what is missing, and ``arch`` may be None.
    ``metrics`` are the parsed ``metrics.jsonl`` rows in order. ``setting`` comes from ``run.json``
    (``"default"`` without one); ``study`` is the study directory's name (``""`` for a lone run).
    """

    run_id: str
    path: Path
    space: str
    kind: str
    strategy: str
    alpha_mode: str
    seed: int | None
    setting: str
    dataset: str
    arch: Architecture | None
    metrics: tuple[dict[str, Any], ...]
    config: dict[str, Any]
    complete: bool
    study: str = ""
    space_config: SpaceConfig | None = None
    run_info: dict[str, Any] = field(default_factory=dict)
    issues: tuple[str, ...] = ()


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in RUN_FILES)


def is_study_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "study.yaml").is_file() or (path / "runs").is_dir())


def load_runs(*paths: str | Path, include_incomplete: bool = True) -> list[RunData]:
    """Read run directories, study directories, or folders of run directories, in the order given.

    Incomplete runs (no found.json yet, a partial or torn metrics.jsonl, an unreadable file) raise an
    :class:`IncompleteRunWarning` and come back with ``complete=False`` and their ``issues`` (or are left
    out with ``include_incomplete=False``). A path that does not exist raises FileNotFoundError; one that
    holds no run at all raises ValueError.
    """
    out: list[RunData] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such run or study directory")
        study = ""
        if is_run_dir(path):
            dirs = [path]
        elif is_study_dir(path):
            study = path.name
            runs_dir = path / "runs"
            dirs = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
        else:
            dirs = sorted(p for p in path.iterdir() if is_run_dir(p)) if path.is_dir() else []
            if not dirs:
                raise ValueError(
                    f"{path}: neither a run directory ({', '.join(RUN_FILES)}) nor a study directory "
                    "(study.yaml, runs/)"
                )
        for d in dirs:
            run = load_run(d, study)
            if not run.complete:
                warnings.warn(
                    f"run {run.run_id!r} ({d}) is incomplete: {'; '.join(run.issues)}",
                    IncompleteRunWarning,
                    stacklevel=2,
                )
                if not include_incomplete:
                    continue
            out.append(run)
    return out


def load_run(path: str | Path, study: str = "") -> RunData:
    """Read one run directory; never raises for a damaged run (see ``RunData.issues``)."""
    path = Path(path)
    issues: list[str] = []
    config = _read_yaml(path / "config.yaml", issues)
    info = _read_json(path / "run.json", issues, required=False)
    metrics, torn = read_metrics(path / "metrics.jsonl", issues)
    if not os.path.lexists(path / "metrics.jsonl"):
        issues.append("no metrics.jsonl")
    if torn:
        issues.append(f"{DAMAGED} metrics.jsonl has a torn or invalid line after epoch row {len(metrics)}")
    arch = None
    if os.path.lexists(path / "found.json"):
        try:
            arch = load_architecture(path / "found.json")
        except PflnasError as exc:
            issues.append(f"{DAMAGED} found.json unreadable ({exc})")
    else:
        issues.append("no found.json yet")
    want, unit = _get(config, "run", "epochs"), "epochs"
    if metrics and "trial" in metrics[0]:  # a multi-trial search writes one row per complete trial
        want, unit = _get(config, "trials", "n_trials"), "trials"
    if isinstance(want, int) and len(metrics) < want:
        issues.append(f"metrics.jsonl has {len(metrics)} of {want} {unit}")
    space = _space(config, arch, issues)
    prov = arch.provenance if arch is not None else {}
    seed = info.get("seed", _get(config, "run", "seed", default=prov.get("seed")))
    return RunData(
        run_id=str(info.get("run_id") or path.name),
        path=path,
        space=str(space.name if space else info.get("space") or _get(config, "space", "name", default="")),
        kind=space.kind if space else "",
        strategy=str(
            info.get("strategy") or _get(config, "strategy", "name", default=prov.get("strategy", ""))
        ),
        alpha_mode=space.alpha_mode if space else "",
        seed=int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None,
        setting=str(info.get("setting") or "default"),
        dataset=str(_get(config, "data", "dataset", default=prov.get("dataset", "")) or ""),
        arch=arch,
        metrics=tuple(metrics),
        config=config,
        complete=not issues,
        study=study,
        space_config=space,
        run_info=info,
        issues=tuple(issues),
    )


def read_metrics(path: Path, issues: list[str] | None = None) -> tuple[list[dict[str, Any]], bool]:
    """The rows of a metrics.jsonl up to the first torn/invalid line, and whether there was one (a path
    that is not a regular file gives no rows, and an issue naming what it is)."""
    text = _text(path, [] if issues is None else issues)
    if text is None:
        return [], False
    rows: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            return rows, True
        if not isinstance(row, dict):
            return rows, True
        rows.append(row)
    return rows, False


def _space(config: dict[str, Any], arch: Architecture | None, issues: list[str]) -> SpaceConfig | None:
    if arch is not None:
        return arch.space
    raw = config.get("resolved_space")
    if isinstance(raw, dict):
        try:
            return space_from_dict(raw, "resolved_space")
        except (PflnasError, TypeError) as exc:
            issues.append(f"config.yaml resolved_space invalid ({exc})")
    return None


def _get(mapping: dict[str, Any], section: str, key: str, default: Any = None) -> Any:
    sub = mapping.get(section)
    return sub.get(key, default) if isinstance(sub, dict) else default


def _text(path: Path, issues: list[str]) -> str | None:
    """The UTF-8 text of ``path`` (undecodable bytes replaced), None when it is missing or is not a regular
    file (a FIFO would block the report: the issue says what it is)."""
    if not os.path.lexists(path):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:  # a symlink loop or a broken link
        issues.append(f"{DAMAGED} {path.name} cannot be read ({exc.strerror})")
        return None
    if not stat.S_ISREG(mode):
        issues.append(f"{DAMAGED} {path.name} is {file_kind(mode)}, not a file")
        return None
    with open_regular(path, path.name) as fh:
        return fh.read().decode("utf-8", errors="replace")


def _read_yaml(path: Path, issues: list[str]) -> dict[str, Any]:
    text = _text(path, issues)
    if text is None:
        if not os.path.lexists(path):
            issues.append("no config.yaml")
        return {}
    try:
        data = parse_yaml(text, path.name)  # capped: a run's config.yaml may be anyone's
    except (PflnasError, yaml.YAMLError) as exc:
        issues.append(f"{DAMAGED} config.yaml unreadable ({str(exc).splitlines()[0]})")
        return {}
    return data if isinstance(data, dict) else {}


def _read_json(path: Path, issues: list[str], required: bool) -> dict[str, Any]:
    text = _text(path, issues)
    if text is None:
        if required and not os.path.lexists(path):
            issues.append(f"no {path.name}")
        return {}
    try:
        data = parse_json(text, path.name)
    except PflnasError as exc:
        issues.append(f"{DAMAGED} {path.name} unreadable ({exc})")
        return {}
    return data if isinstance(data, dict) else {}
