"""``pflnas search --seeds LIST``: the run directories of a grouped search, their locks, and ``--resume``
of any member continuing the whole group (:mod:`pflnas.train.seed_group` runs it)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from pathlib import Path

from pflnas.arch.record import Architecture
from pflnas.config.search import SearchConfig
from pflnas.errors import ConfigError
from pflnas.rundir import claim_new, claim_resume
from pflnas.spaces.config import SpaceConfig
from pflnas.train.group_rules import config_refusal
from pflnas.train.layout import CONFIG

SEED_FIELD = "{seed}"  # in --out: where each seed's number goes
RUN_FILES = f"{CONFIG} with resolved_group"


def group_dirs(out: str | None, cfg: SearchConfig, seeds: list[int]) -> list[Path]:
    """Each seed's run directory: ``--out`` with ``{seed}`` replaced, else ``OUT/seed<N>``."""
    if out is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = f"runs/search-{cfg.space.name}-{cfg.strategy.name}-{stamp}"
    if SEED_FIELD in out:
        return [Path(out.replace(SEED_FIELD, str(s))) for s in seeds]
    return [Path(out) / f"seed{s}" for s in seeds]


def run_group(
    cfg: SearchConfig,
    space: SpaceConfig,
    members: tuple[list[int], list[Path]],
    held: contextlib.ExitStack,
    resume: str | None,
    overwrite: bool,
) -> list[tuple[Architecture, Path]]:
    """Claim every member's directory (new, or to resume), run the group, return each seed's result."""
    seeds, dirs = members
    if len({d.resolve() for d in dirs}) != len(dirs):
        raise ConfigError(
            f"--seeds needs a run directory per seed: put {SEED_FIELD} in --out, e.g. --out runs/x-s{{seed}}"
        )
    why = config_refusal(cfg, space.kind)  # before any directory is claimed
    if why is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        why = "a group runs in one process (its seeds already share each kernel); start it without torchrun"
    if why:
        raise ConfigError(f"--seeds cannot be used: {why} (or run the seeds one at a time with --seed)")
    claimed = Path(resume).resolve() if resume else None
    for d in dirs:
        if resume is None:
            held.enter_context(claim_new(d, "search", reuse=overwrite, again="--resume"))
        elif d.resolve() != claimed:  # the directory --resume named is claimed already
            held.enter_context(claim_resume(d, "search", RUN_FILES))
    from pflnas.train.seed_group import SeedGroupRun  # torch loads here, once the flags are checked

    found = SeedGroupRun(cfg, seeds, dirs, space).run(resume=resume is not None)
    return list(zip(found, dirs))
