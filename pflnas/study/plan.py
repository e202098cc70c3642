"""What a study does with each run, and which runs go together as seed groups.

A run whose found.json loads is complete (skipped); one with a checkpoint is resumed; any other starts
afresh. An arm is the runs of one space, strategy and setting (they differ only in the seed). Where the
arm's strategy and config allow it (:func:`~pflnas.train.group_rules.group_refusal`), its fresh runs start
as seed groups of at most ``batch`` seeds: ONE ``pflnas search --seeds a,b,c --out <runs>/<arm>-s{seed}``
process per group, which shares the kernels of one network between the seeds (much faster on a GPU) and
writes every member's own run directory, the one the run would have alone. A grouped run that was
interrupted resumes with its group when every member is in this arm and resumable, else alone.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pflnas.arch import load_architecture
from pflnas.errors import ConfigError, PflnasError
from pflnas.parsing import parse_json
from pflnas.rundir import user_entries
from pflnas.spaces import resolve_space
from pflnas.study.config import SearchArgs, StudyRun, search_config
from pflnas.train.group_rules import config_refusal, read_group
from pflnas.train.layout import CHECKPOINT, CONFIG, FOUND
from pflnas.utils_io import read_regular_text

RUNS = "runs"
RUN_RECORD = "run.json"
LOG = "log.txt"
SEED_FIELD = "{seed}"  # where `pflnas search --seeds ... --out` puts each member's seed
SEARCH = [sys.executable, "-m", "pflnas", "search"]


@dataclass
class PlannedRun:
    """One run's plan; or, with ``members``, one seed group's: ONE search process for all of its runs
    (``run`` and ``run_dir`` are then its first member's, whose log.txt gets the group's output)."""

    run: StudyRun
    run_dir: Path
    status: str  # "skip" (complete), "resume" (from checkpoint.pt) or "start"
    command: list[str] = field(default_factory=list)  # empty for "skip"
    replace: bool = False  # the directory holds another run's files: remove them before starting
    members: list[PlannedRun] = field(default_factory=list)  # a seed group's runs, in its order; [] alone
    leave_group: bool = False  # resume a grouped run's checkpoint alone: drop resolved_group first
    ungrouped: str = ""  # why this fresh run starts alone although seed groups were asked for

    @property
    def log(self) -> Path:
        return self.run_dir / LOG

    @property
    def runs(self) -> list[PlannedRun]:
        """The runs this plan runs: the group's members, or itself."""
        return self.members or [self]

    @property
    def name(self) -> str:
        """The run id, or ``<arm>-s{0,1,2}`` for a seed group."""
        if not self.members:
            return self.run.run_id
        return f"{self.run.arm}-s{{{','.join(str(m.run.seed) for m in self.members)}}}"


def is_complete(run_dir: Path) -> bool:
    """A run is complete when its found.json exists and loads."""
    try:
        load_architecture(run_dir / FOUND)
    except (PflnasError, OSError, ValueError):
        return False
    return True


def _read_json(path: Path) -> Any:
    try:
        return parse_json(read_regular_text(path, "record"), str(path))  # a FIFO never blocks the plan
    except (PflnasError, OSError, ValueError):
        return None


def plan_run(run: StudyRun, run_dir: Path, search_args: list[str], overwrite: bool) -> PlannedRun:
    """What to do with one run, from what its directory holds. A directory that holds another run (its
    run.json differs, or is missing beside other files) is an error unless ``overwrite``."""
    start = [*SEARCH, *search_args, "--out", str(run_dir), "--overwrite"]  # run.json is written first
    if not user_entries(run_dir):
        return PlannedRun(run, run_dir, "start", start)
    if _read_json(run_dir / RUN_RECORD) != run.record():
        if not overwrite:
            raise ConfigError(
                f"{run_dir} holds another run (its {RUN_RECORD} differs from the study's); "
                "use another --out, or --overwrite to replace it"
            )
        return PlannedRun(run, run_dir, "start", start, replace=True)
    if is_complete(run_dir):
        return PlannedRun(run, run_dir, "skip")
    if (run_dir / CHECKPOINT).is_file() and (run_dir / CONFIG).is_file():
        return PlannedRun(run, run_dir, "resume", [*SEARCH, "--resume", str(run_dir)])
    return PlannedRun(run, run_dir, "start", start)


def arm_refusal(args: SearchArgs) -> str | None:
    """Why an arm's runs (``args``: one of them) cannot run as seed groups, or None if they can; decided
    from the config alone, as the group itself decides (:func:`group_refusal`)."""
    try:
        cfg = search_config(args)
        return config_refusal(cfg, resolve_space(cfg.space).kind)
    except PflnasError as exc:
        return str(exc)


def plan_arm(arm: list[PlannedRun], args: SearchArgs, batch: int | None, runs_dir: Path) -> list[PlannedRun]:
    """An arm's plans (``arm``: its runs' own, in seed order; ``args``: the first run's search arguments)
    with its seed groups, each at its first member's place. ``batch``: the most seeds in a group (None:
    all; 1: no groups). Fresh runs that cannot be grouped say why in ``ungrouped``."""
    job_of: dict[int, PlannedRun] = {}
    for members in _resumed_groups(arm, batch):
        job = _group(members, "resume", [*SEARCH, "--resume", str(members[0].run_dir)])
        job_of.update({id(m): job for m in members})
    starts = [p for p in arm if p.status == "start"]
    why = None
    if batch != 1 and len(starts) > 1:
        why = arm_refusal(args)
        if why is None and SEED_FIELD in str(runs_dir):
            why = f"the study's path holds {SEED_FIELD}, which a seed group's --out fills in"
    if why is not None:
        for p in starts:
            p.ungrouped = why
    elif batch != 1 and len(starts) > 1:
        size = batch or len(starts)
        for chunk in (starts[i : i + size] for i in range(0, len(starts), size)):
            if len(chunk) > 1:
                out = str(runs_dir / f"{chunk[0].run.arm}-s{SEED_FIELD}")
                command = [*SEARCH, *args.argv(seeds=[p.run.seed for p in chunk]), "--out", out]
                job = _group(chunk, "start", [*command, "--overwrite"])
                job_of.update({id(m): job for m in chunk})
    plans: list[PlannedRun] = []
    for p in arm:
        job = job_of.get(id(p), p)
        if not any(job is q for q in plans):
            plans.append(job)
    return plans


def _group(members: list[PlannedRun], status: str, command: list[str]) -> PlannedRun:
    first = members[0]
    return PlannedRun(first.run, first.run_dir, status, command, members=members)


def _resumed_groups(arm: list[PlannedRun], batch: int | None) -> list[list[PlannedRun]]:
    """The interrupted seed groups to resume as one: every member is a run of this arm with a checkpoint,
    and the group has at most ``batch`` seeds. A member of any other group resumes alone."""
    resumable = {p.run_dir.resolve(): p for p in arm if p.status == "resume"}
    taken: set[int] = set()
    groups = []
    for p in arm:
        if p.status != "resume" or id(p) in taken:
            continue
        try:
            group = read_group(p.run_dir)
        except (PflnasError, OSError, ValueError, TypeError):  # a damaged config: the search will say
            group = None
        if group is None or len(group[1]) < 2:
            continue  # a run of its own (a group of one resumes as one)
        members = [resumable.get(d.resolve()) for d in group[1]]
        fits = batch is None or len(members) <= batch
        if fits and all(m is not None and id(m) not in taken for m in members):
            groups.append([m for m in members if m is not None])
            taken.update(id(m) for m in members)
        else:
            p.leave_group = True
    return groups
