"""Seed groups (``pflnas search --seeds``: N seeds' searches as one grouped network) without torch: what a
group cannot run, and how a member's run directory names its group.

One rule, in one place: :func:`pflnas.train.seed_group.check_groupable` refuses a group with it (from the
runs it set up), and ``pflnas study`` asks it which arms to group (from the config alone). A member's
config.yaml holds ``resolved_group``; ``pflnas search --resume`` of any member continues the whole group,
so a study that resumes a member without its group removes it first (:func:`leave_group`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pflnas.config.loader import read_yaml
from pflnas.config.search import SearchConfig
from pflnas.config.validate import resolve_layout
from pflnas.errors import ConfigError
from pflnas.strategies import seed_group_strategies
from pflnas.train.layout import CONFIG
from pflnas.utils_io import atomic_write_text

# the space kinds with a grouped supernet (pflnas.supernet.grouped.GROUPED_FORMS, which a test holds equal)
GROUPED_KINDS = ("darts_cell", "nb201_cell")


def group_refusal(cfg: SearchConfig, *, seed_groups: bool, space_kind: str, layout: str) -> str | None:
    """Why the searches of ``cfg`` cannot run as a seed group, or None if they can. ``seed_groups`` is the
    strategy's :attr:`~pflnas.strategies.base.Strategy.seed_groups`, ``space_kind`` the resolved space's
    kind and ``layout`` the supernet layout the search would run."""
    run = cfg.run
    if not seed_groups:
        names = ", ".join(seed_group_strategies())
        return f"strategy {cfg.strategy.name!r} has no grouped form ({names} have)"
    if space_kind not in GROUPED_KINDS:
        kinds = " and ".join(GROUPED_KINDS)
        return f"space {cfg.space.name!r} is a {space_kind} space; grouped supernets are for {kinds} spaces"
    if layout != "per_source":
        return f"it runs the per_source layout; drop space.layout={layout}"
    if cfg.latency.weight > 0:
        return "the latency-aware objective runs per search; drop latency.weight"
    if run.nonfinite == "skip":
        return "run.nonfinite=skip would drop every seed's batch for one seed's NaN; use run.nonfinite=stop"
    if run.channels_last:
        return "the grouped network runs in the default memory format; drop run.channels_last"
    if run.compile:
        return "run.compile is not supported for grouped searches yet; drop run.compile"
    return None


def config_refusal(cfg: SearchConfig, space_kind: str) -> str | None:
    """:func:`group_refusal` decided from the config alone (the strategy's registry entry, the layout the
    config asks for): what ``pflnas search --seeds`` checks before it claims a directory, and ``pflnas
    study`` before it plans a group."""
    grouped = cfg.strategy.name in seed_group_strategies()
    layout = resolve_layout(cfg.run.share_param_free, cfg.space.layout)
    return group_refusal(cfg, seed_groups=grouped, space_kind=space_kind, layout=layout)


def read_group(run_dir: Path) -> tuple[list[int], list[Path]] | None:
    """The group ``run_dir`` belongs to (its config.yaml's ``resolved_group``), or None for a single run."""
    group: Any = read_yaml(run_dir / CONFIG).get("resolved_group")
    if group is None:
        return None
    seeds, dirs = (
        group.get("seeds") if isinstance(group, dict) else None,
        group.get("dirs") if isinstance(group, dict) else None,
    )
    if not (isinstance(seeds, list) and isinstance(dirs, list) and len(seeds) == len(dirs) and seeds):
        raise ConfigError(
            f"{run_dir / CONFIG}: resolved_group must hold the seeds and one directory each; start the group "
            "again with --overwrite"
        )
    return [int(s) for s in seeds], [(run_dir / d) for d in dirs]


def leave_group(run_dir: Path) -> None:
    """Make a member a run of its own: its config.yaml without ``resolved_group``, so that ``pflnas search
    --resume`` continues this seed alone (its checkpoint is an ordinary single-seed one)."""
    data = read_yaml(run_dir / CONFIG)
    if data.pop("resolved_group", None) is not None:
        atomic_write_text(run_dir / CONFIG, yaml.safe_dump(data, sort_keys=False))
