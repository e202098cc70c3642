"""Run a study: expand its grid into runs, decide which to skip, resume or start, and run them as
``pflnas search`` subprocesses, a few at a time.

A study directory holds ``study.yaml`` (the resolved study) and ``runs/<run_id>/`` per run: the search's own
files (config.yaml, metrics.jsonl, checkpoint.pt, found.json) plus ``run.json`` (which grid point it is)
and ``log.txt`` (the search's output). A run whose found.json loads is complete; one with a checkpoint is
resumed; any other starts afresh. So re-running an interrupted study continues it. Seeds of one arm that
can share a grouped network run as one ``pflnas search --seeds`` process (:mod:`pflnas.study.plan`), which
writes the same run directories; such a process counts as one of ``--jobs``.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml
from tqdm import tqdm

from pflnas.errors import ConfigError
from pflnas.parsing import parse_yaml
from pflnas.rundir import mark, user_entries
from pflnas.study.config import SearchArgs, StudyConfig, StudyRun, arm_id, check_runs, search_args
from pflnas.study.plan import LOG, RUN_RECORD, RUNS, PlannedRun, is_complete, plan_arm, plan_run
from pflnas.train.group_rules import leave_group
from pflnas.train.layout import CHECKPOINT, CONFIG, FOUND, METRICS
from pflnas.utils_io import atomic_write_json, atomic_write_text, open_log

STUDY_FILE = "study.yaml"
POLL_S = 0.2
# study.yaml keys that decide what runs; a study whose other keys (description, jobs) changed is the same
_IDENTITY = ("name", "search", "grid")


def expand_grid(study: StudyConfig) -> list[StudyRun]:
    """Every run of the study: space × strategy × setting × seed, in that nesting order."""
    grid = study.grid
    return [
        StudyRun(
            run_id=f"{arm_id(space, strategy, setting)}-s{seed}",
            space=space,
            strategy=strategy,
            setting=setting,
            seed=seed,
            overrides=study.overrides(setting),
            preset=study.search.preset,
        )
        for space in grid.spaces
        for strategy in grid.strategies
        for setting in grid.settings
        for seed in grid.seeds
    ]


def default_out(study: StudyConfig) -> Path:
    return Path("runs") / f"study-{study.name}"


def threads_per_run(jobs: int) -> int:
    """CPU threads for each of ``jobs`` concurrent runs."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus // jobs)


@dataclass(frozen=True)
class StudyOptions:
    out: Path
    jobs: int = 1
    data_dir: str | None = None
    device: str | None = None
    overwrite: bool = False  # replace a different study.yaml and runs that no longer match
    dry_run: bool = False
    batch_seeds: int | None = None  # most seeds of an arm in one grouped search (None: all; 1: no groups)
    rerun: str = "pflnas study ..."  # the command that continues this study, for messages


def _normalised(data: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(data))


def check_study_dir(study: StudyConfig, out: Path, overwrite: bool) -> None:
    """Refuse a directory that holds another study (or other files) unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if overwrite or not user_entries(out):  # the command has refused a folder pflnas did not write
        return
    path = out / STUDY_FILE
    if not path.is_file():
        raise ConfigError(f"{out} is not empty and holds no {STUDY_FILE}; use another --out")
    try:
        old = parse_yaml(path.read_text(), str(path)) or {}  # capped: the folder may hold anything
    except (OSError, yaml.YAMLError):
        old = {}
    new = _normalised(study.to_dict())
    differs = [k for k in _IDENTITY if not isinstance(old, dict) or old.get(k) != new[k]]
    if differs:
        raise ConfigError(
            f"{path} holds a different study (it differs in {', '.join(differs)}); use another --out, or "
            f"--overwrite to replace {STUDY_FILE} (complete runs that still match are kept)"
        )


def plan_study(study: StudyConfig, options: StudyOptions) -> list[PlannedRun]:
    """Check the study and its directory, and decide what to do with each run and which runs go together
    as seed groups (:func:`~pflnas.study.plan.plan_arm`). Runs nothing."""
    runs = expand_grid(study)
    threads = threads_per_run(options.jobs)
    kw: dict[str, Any] = dict(threads=threads, data_dir=options.data_dir, device=options.device)
    check_runs(study, runs, **kw)
    check_study_dir(study, options.out, options.overwrite)
    arms: dict[str, list[tuple[PlannedRun, SearchArgs]]] = {}
    for run in runs:
        args = search_args(study, run.space, run.strategy, run.seed, run.overrides, **kw)
        planned = plan_run(run, options.out / RUNS / run.run_id, args.argv(), options.overwrite)
        arms.setdefault(run.arm, []).append((planned, args))
    plan: list[PlannedRun] = []
    for arm in arms.values():
        plan += plan_arm([p for p, _ in arm], arm[0][1], options.batch_seeds, options.out / RUNS)
    return plan


def _clock(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _runs(plan: list[PlannedRun]) -> list[PlannedRun]:
    return [r for p in plan for r in p.runs]


def print_plan(study: StudyConfig, plan: list[PlannedRun], options: StudyOptions) -> None:
    """Each run's status; each command once, after the runs it runs (a seed group's after its members)."""
    print(
        f"study {study.name}: {len(_runs(plan))} runs in {options.out}, {options.jobs} at a time, "
        f"{threads_per_run(options.jobs)} thread(s) each (dry run: nothing is run)"
    )
    noted: set[str] = set()
    for p in plan:
        if p.ungrouped and p.run.arm not in noted:
            noted.add(p.run.arm)
            print(f"{p.run.arm}: one search per seed, no seed groups: {p.ungrouped}")
        for r in p.runs:
            note = {"skip": "complete: found.json", "resume": "from checkpoint.pt"}.get(r.status, "")
            if r.replace:
                note = "replaces a run with other settings"
            if p.members:
                note = ", ".join(filter(None, [note, f"seed group {p.name}"]))
            elif r.leave_group:
                note += ", alone: its seed group does not resume as one here"
            print(f"would {r.status:<7} {r.run.run_id}" + (f"  ({note})" if note else ""))
        if p.command:
            print(f"    {shlex.join(p.command)}")
    counts = {s: sum(r.status == s for r in _runs(plan)) for s in ("skip", "resume", "start")}
    groups = sum(bool(p.members) for p in plan)
    print(
        ", ".join(f"{n} would {s}" for s, n in counts.items())
        + (f"; {groups} seed group(s)" if groups else "")
    )


@dataclass
class _Active:
    planned: PlannedRun
    proc: subprocess.Popen
    log: IO[str]
    started: float


def _prepare(r: PlannedRun) -> None:
    r.run_dir.mkdir(parents=True, exist_ok=True)
    mark(r.run_dir, "search")  # the study made it: its search may replace what is there (--overwrite)
    if r.replace:
        for name in (FOUND, CHECKPOINT, CONFIG, METRICS):
            (r.run_dir / name).unlink(missing_ok=True)
    atomic_write_json(r.run_dir / RUN_RECORD, r.run.record())


def _launch(p: PlannedRun) -> _Active:
    """Start one search process: a run's, or a seed group's. A group's output goes to its first member's
    log.txt; every other member's log.txt holds the command and where its output is."""
    for r in p.runs:
        _prepare(r)
    if p.leave_group:
        leave_group(p.run_dir)
    command = f"$ {shlex.join(p.command)}\n"
    for r in p.runs[1:]:
        with open_log(r.log, truncate=r.status != "resume") as other:
            other.write(f"{command}(seed group {p.name}: its output is in {p.log})\n")
    log = open_log(p.log, truncate=p.status != "resume")  # closed when the run ends; never via a link
    log.write(command)
    log.flush()
    proc = subprocess.Popen(
        p.command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return _Active(p, proc, log, time.perf_counter())


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


class _Terminated(Exception):
    """SIGTERM, raised in the main thread so that the pool stops like on Ctrl-C."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise _Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(active: list[_Active], timeout: float = 30.0) -> None:
    """Terminate the children and wait for them; kill any that do not exit in ``timeout`` seconds."""
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in old:
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not orphan the children
    except ValueError:
        old = {}
    try:
        for a in active:
            if a.proc.poll() is None:
                a.proc.terminate()
        deadline = time.monotonic() + timeout
        for a in active:
            try:
                a.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                a.proc.kill()
                a.proc.wait()
            a.log.close()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


_Outcome = tuple[PlannedRun, str]  # a finished run and its wall time (done) or why it failed


def _execute(
    todo: list[PlannedRun], jobs: int, say: Callable[[str], None], progress: bool = True
) -> tuple[list[_Outcome], list[_Outcome]]:
    """Run ``todo`` (runs and seed groups, each one process), ``jobs`` at a time, polling for the ones that
    end. Returns (done, failed), one entry per run. A bar on stderr counts the runs that ended, with an ETA
    (tqdm hides it when stderr is not a terminal)."""
    bar = tqdm(
        total=len(_runs(todo)),
        desc="study",
        unit="run",
        disable=None if progress else True,
        dynamic_ncols=True,
    )
    try:
        return _poll(todo, jobs, say, bar)
    finally:
        bar.close()


def _poll(
    todo: list[PlannedRun], jobs: int, say: Callable[[str], None], bar: tqdm
) -> tuple[list[_Outcome], list[_Outcome]]:
    pending, active = deque(todo), []
    done: list[_Outcome] = []
    failed: list[_Outcome] = []
    width = len(str(len(todo)))
    number = {id(p): f"[{i + 1:>{width}}/{len(todo)}]" for i, p in enumerate(todo)}
    try:
        while pending or active:
            while pending and len(active) < jobs:
                p = pending.popleft()
                active.append(_launch(p))
                how = "from its checkpoint" if p.status == "resume" else "fresh"
                if p.members:
                    how += f", {len(p.members)} seeds as one grouped search"
                say(f"{number[id(p)]} {p.status:<7} {p.name}  ({how}; log: {p.log})")
            time.sleep(POLL_S)
            bar.refresh()  # the elapsed time moves while runs go on
            for a in [a for a in active if a.proc.poll() is not None]:
                active.remove(a)
                a.log.close()
                bar.update(len(a.planned.runs))
                ok, bad, why = _ended(a)
                done += ok
                failed += bad
                p, wall = a.planned, _clock(time.perf_counter() - a.started)
                if not bad:
                    say(f"{number[id(p)]} {'done':<7} {p.name}  {wall}")
                else:
                    last = _last_line(p.log)
                    say(f"{number[id(p)]} {'failed':<7} {p.name}  {wall}  {why}: {last}  (log: {p.log})")
    except (KeyboardInterrupt, _Terminated):
        _stop(active)
        raise _Interrupted([a.planned for a in active], list(pending)) from None
    return done, failed


def _ended(a: _Active) -> tuple[list[_Outcome], list[_Outcome], str]:
    """(done, failed) for each run of a process that ended, and why the process failed: a run is done
    (with its wall time) when the process exited 0 and the run's found.json loads."""
    rc, wall = a.proc.returncode, _clock(time.perf_counter() - a.started)
    why = f"exit {rc}" if rc != 0 else f"exit 0 but no valid {FOUND}"
    where = f" in seed group {a.planned.name}" if a.planned.members else ""
    done: list[_Outcome] = []
    failed: list[_Outcome] = []
    for r in a.planned.runs:
        if rc == 0 and is_complete(r.run_dir):
            done.append((r, wall))
        else:
            failed.append((r, why + where))
    return done, failed, why


class _Interrupted(Exception):
    def __init__(self, running: list[PlannedRun], pending: list[PlannedRun]):
        super().__init__("interrupted")
        self.running, self.pending = running, pending


def run_study(study: StudyConfig, options: StudyOptions) -> int:
    """Plan and run the study. Returns 0 when every run is complete, 1 when some failed, 130 when
    interrupted (Ctrl-C or SIGTERM: the children are stopped and the study can be continued)."""
    plan = plan_study(study, options)
    if options.dry_run:
        print_plan(study, plan, options)
        return 0
    options.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(options.out / STUDY_FILE, yaml.safe_dump(study.to_dict(), sort_keys=False))

    def say(line: str) -> None:
        tqdm.write(line, file=sys.stdout)  # above the bar of runs
        sys.stdout.flush()

    skipped = [p for p in plan if p.status == "skip"]
    todo = [p for p in plan if p.status != "skip"]
    groups = sum(bool(p.members) for p in todo)
    grouped = f" in {len(todo)} processes ({groups} seed group(s))" if groups else ""
    say(
        f"study {study.name}: {len(_runs(plan))} runs in {options.out} ({len(skipped)} complete, "
        f"{len(_runs(todo))} to run{grouped}, {options.jobs} at a time, "
        f"{threads_per_run(options.jobs)} thread(s) each)"
    )
    for p in skipped:
        say(f"{'skip':<7} {p.run.run_id}  (complete)")
    t0 = time.perf_counter()
    with _sigterm_raises():
        try:
            progress = study.search.set.get("run.progress", True) is not False  # the runs' own setting
            done, failed = _execute(todo, options.jobs, say, progress)
        except _Interrupted as stop:
            _report_interrupt(stop, options)
            return 130
    say(
        f"study {study.name}: {len(done)} done, {len(skipped)} skipped, {len(failed)} failed "
        f"in {_clock(time.perf_counter() - t0)}  (logs: {options.out / RUNS}/<run_id>/{LOG})"
    )
    if failed:
        names = ", ".join(f"{p.run.run_id} ({why}, log: {p.log})" for p, why in failed)
        print(f"pflnas study: {len(failed)} run(s) failed: {names}", file=sys.stderr, flush=True)
        return 1
    return 0


def _report_interrupt(stop: _Interrupted, options: StudyOptions) -> None:
    running = _runs(stop.running)
    resumable = [p.run.run_id for p in running if (p.run_dir / CHECKPOINT).is_file()]
    restart = [p.run.run_id for p in running if not (p.run_dir / CHECKPOINT).is_file()]
    lines = [f"pflnas study: interrupted; stopped {len(running)} running run(s)"]
    if resumable:
        lines.append(f"  resume from their last checkpoint: {', '.join(resumable)}")
    if restart:
        lines.append(f"  start again (no checkpoint yet): {', '.join(restart)}")
    if stop.pending:
        lines.append(f"  not started: {len(_runs(stop.pending))} run(s)")
    lines.append(f"re-run the same command to continue: {options.rerun}")
    print("\n".join(lines), file=sys.stderr, flush=True)
