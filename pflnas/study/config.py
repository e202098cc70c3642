"""A study file: a grid of ``pflnas search`` runs (spaces × strategies × settings × seeds) in YAML.

:func:`load_study` checks the file's shape (unknown keys, types, empty lists, repeats, names);
:func:`check_runs` builds every run's search config from the exact arguments its ``pflnas search`` will
get, through the builder that command uses, so a bad space, strategy or override fails before anything runs.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pflnas.config.build import build_search_config
from pflnas.config.limits import check_grid_size, check_list
from pflnas.config.loader import from_dict, parse_override, read_yaml, to_dict
from pflnas.config.presets import preset_path
from pflnas.config.search import SearchConfig
from pflnas.data.specs import get_dataset_spec
from pflnas.device import resolve_device
from pflnas.errors import ConfigError, PflnasError
from pflnas.names import name_hint
from pflnas.spaces import resolve_space
from pflnas.strategies import list_strategies

# names that become parts of run ids ("{space}-{strategy}-{setting}-s{seed}") and directory names
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# search keys a study file may not set, and why: the grid sets the first three; the machine-specific ones
# come from the `pflnas study` command line
RESERVED = {
    "space.name": "the grid sets it; list spaces under grid.spaces",
    "strategy.name": "the grid sets it; list strategies under grid.strategies",
    "run.seed": "the grid sets it; list seeds under grid.seeds",
    "data.data_dir": "it depends on the machine; pass --data-dir to pflnas study (or set PFLNAS_DATA)",
    "run.device": "it depends on the machine; pass --device to pflnas study",
}


@dataclass(frozen=True)
class StudySearch:
    """What every run shares, as ``pflnas search`` takes it: a preset and ``--set`` overrides."""

    preset: str | None = None
    set: dict[str, Any] = field(default_factory=dict)  # "section.key" -> value


@dataclass(frozen=True)
class StudyGrid:
    spaces: tuple[str, ...] = ()
    strategies: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    # named override sets ("section.key" -> value), applied over search.set
    settings: dict[str, dict[str, Any]] = field(default_factory=lambda: {"default": {}})


@dataclass(frozen=True)
class StudyConfig:
    kind: str = "search"  # "layer" studies are pflnas.study.layer's
    name: str = ""
    description: str = ""
    search: StudySearch = field(default_factory=StudySearch)
    grid: StudyGrid = field(default_factory=StudyGrid)
    jobs: int = 1  # runs at a time; `pflnas study --jobs` overrides
    # most seeds of an arm in one grouped search (None: all of them; 1: none grouped); --batch-seeds overrides
    batch_seeds: int | None = None

    def overrides(self, setting: str) -> dict[str, Any]:
        """The ``--set`` overrides of one setting's runs: ``search.set`` updated by the setting's own."""
        return {**self.search.set, **self.grid.settings[setting]}

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True)
class StudyRun:
    """One search of a study: a point of the grid."""

    run_id: str
    space: str
    strategy: str
    setting: str
    seed: int
    overrides: dict[str, Any]  # "section.key" -> value: search.set updated by the setting's overrides
    preset: str | None = None

    @property
    def arm(self) -> str:
        """The run id without its seed: the runs of one space, strategy and setting share it."""
        return arm_id(self.space, self.strategy, self.setting)

    def record(self) -> dict[str, Any]:
        """What run.json holds; a run directory whose run.json differs holds another run."""
        return {
            "run_id": self.run_id,
            "space": self.space,
            "strategy": self.strategy,
            "seed": self.seed,
            "setting": self.setting,
            "overrides": self.overrides,
            "preset": self.preset,
        }


def space_label(space: str) -> str:
    """The run-id part for a space: its name, or the stem of a YAML path."""
    return Path(space).stem if space.endswith((".yaml", ".yml")) else space


def arm_id(space: str, strategy: str, setting: str) -> str:
    """``{space}-{strategy}-{setting}``: a run's id is this with ``-s{seed}`` after it."""
    return f"{space_label(space)}-{strategy}-{setting}"


def load_study(path: str | Path) -> StudyConfig:
    """Read and check a study file; every problem is one :class:`ConfigError` line naming the key."""
    data = read_yaml(path)
    settings = data.get("grid", {}).get("settings") if isinstance(data.get("grid"), dict) else None
    if isinstance(settings, dict):  # `name:` with nothing after it is a setting without overrides
        data["grid"]["settings"] = {k: {} if v is None else v for k, v in settings.items()}
    try:
        study = from_dict(StudyConfig, data)
        _check_shape(study)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return study


def _check_shape(study: StudyConfig) -> None:
    if study.kind != "search":
        raise ConfigError(f"kind must be 'search' here, got {study.kind!r} (layer studies: kind: layer)")
    if not _STUDY_NAME.match(study.name):
        raise ConfigError(
            f"name {study.name!r} must be a non-empty name of letters, digits, '_', '-' or '.' "
            "(it names the study directory runs/study-<name>)"
        )
    if study.jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {study.jobs}")
    if study.batch_seeds is not None and study.batch_seeds < 1:
        raise ConfigError(f"batch_seeds must be >= 1 (1: no seed groups), got {study.batch_seeds}")
    if study.search.preset is not None:
        preset_path(study.search.preset)
    grid = study.grid
    for key, values in (("spaces", grid.spaces), ("strategies", grid.strategies), ("seeds", grid.seeds)):
        check_list(f"grid.{key}", values)
    check_grid_size(
        "runs",
        spaces=len(grid.spaces),
        strategies=len(grid.strategies),
        settings=len(grid.settings),
        seeds=len(grid.seeds),
    )
    labels = Counter(space_label(s) for s in grid.spaces)
    for i, space in enumerate(grid.spaces):
        label = space_label(space)
        if not _NAME.match(label):
            raise ConfigError(
                f"grid.spaces[{i}] {space!r}: a space name may hold only letters, digits and '_' "
                "(it is part of the run ids); rename the space"
            )
        if labels[label] > 1:
            raise ConfigError(f"grid.spaces: two spaces are both named {label!r}; rename one of the files")
    for i, strategy in enumerate(grid.strategies):
        if strategy not in list_strategies():
            raise ConfigError(
                f"grid.strategies[{i}]: unknown strategy {strategy!r}{name_hint(strategy, list_strategies())}"
                f"; a study runs the one-shot strategies {', '.join(list_strategies())}"
            )
    for i, seed in enumerate(grid.seeds):
        if not 0 <= seed < 2**63:
            raise ConfigError(f"grid.seeds[{i}] must be >= 0 and < 2**63, got {seed}")
    if not grid.settings:
        raise ConfigError("grid.settings is empty; leave it out for one setting without overrides")
    _check_overrides("search.set", study.search.set)
    for name, overrides in grid.settings.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"grid.settings: name {name!r} may hold only letters, digits and '_' "
                "(it is part of the run ids)"
            )
        if not isinstance(overrides, dict):
            raise ConfigError(
                f"grid.settings.{name} must be a mapping of section.key: value, got {overrides!r}"
            )
        _check_overrides(f"grid.settings.{name}", overrides)


def _check_overrides(where: str, overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if not isinstance(key, str) or "." not in key:
            raise ConfigError(f"{where}: key {key!r} must look like section.key (e.g. run.epochs)")
        if key in RESERVED:
            raise ConfigError(f"{where}: {key} cannot be set in a study ({RESERVED[key]})")
        item = override_arg(key, value)
        try:
            parsed = parse_override(item)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        for part in key.split("."):
            parsed = parsed[part]
        if parsed != value:
            raise ConfigError(
                f"{where}.{key}: the value {value!r} does not survive the command line; simplify it"
            )


def override_arg(key: str, value: Any) -> str:
    """``key=value`` for ``pflnas search --set``, with the value as one-line YAML."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"))
    return f"{key}={text.strip().removesuffix('...').strip()}"


@dataclass(frozen=True)
class SearchArgs:
    """One run's ``pflnas search`` arguments, typed; :meth:`argv` is its command line (without ``--out``)."""

    space: str
    strategy: str
    seed: int
    sets: tuple[str, ...]  # --set items, in order
    preset: str | None = None
    data_dir: str | None = None
    device: str | None = None

    def flags(self) -> dict[str, Any]:
        """Config key -> value of the flags given."""
        out: dict[str, Any] = {
            "space.name": self.space,
            "strategy.name": self.strategy,
            "run.seed": self.seed,
        }
        if self.data_dir:
            out["data.data_dir"] = self.data_dir
        if self.device:
            out["run.device"] = self.device
        return out

    def argv(self, seeds: Sequence[int] | None = None) -> list[str]:
        """The arguments; with ``seeds``, ``--seeds a,b,c`` in place of ``--seed`` (a seed group)."""
        seed = ["--seeds", ",".join(map(str, seeds))] if seeds else ["--seed", str(self.seed)]
        args = ["--space", self.space, "--strategy", self.strategy, *seed]
        if self.preset:
            args += ["--preset", self.preset]
        if self.data_dir:
            args += ["--data-dir", self.data_dir]
        if self.device:
            args += ["--device", self.device]
        for item in self.sets:
            args += ["--set", item]
        return args


def search_args(
    study: StudyConfig,
    space: str,
    strategy: str,
    seed: int,
    overrides: dict[str, Any],
    *,
    threads: int,
    data_dir: str | None = None,
    device: str | None = None,
) -> SearchArgs:
    """The ``pflnas search`` arguments of one run.

    Overrides come after the study's own ``run.progress``/``run.threads`` so a study's ``run.threads`` wins.
    """
    sets = ["run.progress=false", f"run.threads={threads}"]
    sets += [override_arg(key, value) for key, value in overrides.items()]
    return SearchArgs(space, strategy, seed, tuple(sets), study.search.preset, data_dir, device)


def search_config(args: SearchArgs) -> SearchConfig:
    """The config ``pflnas search`` would run with on ``args``, checked as far as it can be without data."""
    cfg = build_search_config(preset=args.preset, flags=args.flags(), sets=args.sets)
    resolve_space(cfg.space)
    if cfg.strategy.name not in list_strategies():
        name = cfg.strategy.name
        raise ConfigError(
            f"unknown strategy {name!r}{name_hint(name, list_strategies())}; a study runs the one-shot "
            f"strategies {', '.join(list_strategies())}"
        )
    get_dataset_spec(cfg.data.dataset)
    resolve_device(cfg.run.device)
    return cfg


def check_runs(
    study: StudyConfig,
    runs: Sequence[StudyRun],
    *,
    threads: int,
    data_dir: str | None = None,
    device: str | None = None,
) -> None:
    """Build and validate the search config of every run; the first problem raises one line naming the
    study key (or the run) it comes from."""
    if data_dir and not Path(data_dir).expanduser().exists():
        raise ConfigError(f"--data-dir {data_dir} does not exist; point it at the data")
    if device:
        resolve_device(device)
    grid = study.grid
    space0, strategy0, seed0 = grid.spaces[0], grid.strategies[0], grid.seeds[0]

    def check(where: str, space: str, strategy: str, seed: int, overrides: dict[str, Any]) -> None:
        args = search_args(
            study, space, strategy, seed, overrides, threads=threads, data_dir=data_dir, device=device
        )
        try:
            search_config(args)
        except PflnasError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    # one part at a time first, so that the message names the key to fix; then every run
    for i, space in enumerate(grid.spaces):
        check(f"grid.spaces[{i}]", space, strategy0, seed0, {})
    check("search.set", space0, strategy0, seed0, study.search.set)
    for name in grid.settings:
        check(f"grid.settings.{name}", space0, strategy0, seed0, study.overrides(name))
    # a run's config depends on its seed only through run.seed (range-checked with the grid), so one check
    # per space x strategy x setting covers every run
    checked: set[tuple[str, str, str]] = set()
    for run in runs:
        if (run.space, run.strategy, run.setting) not in checked:
            checked.add((run.space, run.strategy, run.setting))
            check(f"run {run.run_id}", run.space, run.strategy, run.seed, run.overrides)
