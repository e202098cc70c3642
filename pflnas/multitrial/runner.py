"""Run a multi-trial search on Optuna: sample an architecture per trial, evaluate it, collect the results.

:func:`run_trials` is the library entry point (the CLI driver and ``pflnas bench`` build on it). The study
stops once it holds ``n_trials`` complete trials, counted over every worker sharing its storage: start the
same call in several processes or machines with one storage and study name and they share the work (a
worker that is mid-trial when the count is reached still finishes its trial).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from pflnas.arch.record import Architecture
from pflnas.errors import ConfigError, PflnasError
from pflnas.multitrial.objectives import Objective, dominates, objective_values, resolve_objectives
from pflnas.multitrial.samplers import PARENT_ATTR, create_sampler
from pflnas.multitrial.space import params_to_architecture, search_space, suggest_architecture
from pflnas.multitrial.storage import open_storage, redact
from pflnas.spaces.config import SpaceConfig

METRICS_ATTR = "metrics"  # trial user attr: everything the evaluator returned
WORKER_ATTR = "worker"  # trial user attr: "host:pid" of the worker that ran it (which machine, which process)
STUDY_ATTR = "pflnas"  # study user attr: what the study searches (space, strategy, objectives)
_logger = logging.getLogger(__name__)
SELECTION_RULES = {  # how the chosen trial (found.json) is picked, by number of objectives
    1: "the most accurate complete trial (ties: the earliest)",
    2: "the Pareto point closest to the ideal point after min-max normalising each objective over the front "
    "(accuracy up, cost down); ties: the more accurate, then the earliest trial",
}
SELECTION_RULE = "; ".join(f"{n} objective(s): {rule}" for n, rule in SELECTION_RULES.items())


class TrialEvaluator(Protocol):
    """Scores one architecture: always ``"accuracy"`` (a fraction in [0, 1]), plus any other metrics, e.g.
    ``"latency_ms"`` (measured, batch 1) or ``"params"`` (count), which objectives may name."""

    def __call__(self, arch: Architecture) -> dict[str, float]: ...


@dataclass(frozen=True)
class TrialRecord:
    """One trial of the study: its state, choices, architecture and (when complete) objective values."""

    number: int
    state: str  # Optuna's TrialState name: COMPLETE, FAIL, RUNNING, WAITING, PRUNED
    params: dict[str, Any]
    values: tuple[float, ...] | None  # in objective order; None unless complete
    metrics: dict[str, float]
    architecture: Architecture | None  # None while the trial has not chosen every parameter
    retry_of: int | None = None  # the original trial this one retries (its worker died)
    parent: int | None = None  # regularized evolution: the trial this one mutates
    duration_s: float | None = None
    worker: str | None = None  # "host:pid" of the worker that ran it

    @property
    def complete(self) -> bool:
        return self.state == TrialState.COMPLETE.name

    @property
    def param_free_share(self) -> float:
        return self.architecture.param_free_share() if self.architecture is not None else math.nan


@dataclass(frozen=True)
class TrialsResult:
    """Every trial of the study, and the chosen architecture.

    ``best`` is the most accurate complete trial with one objective, the chosen Pareto point (see
    :data:`SELECTION_RULES`) with two; ``pareto`` the non-dominated complete trials, by increasing cost.
    """

    space: SpaceConfig
    strategy: str
    objectives: tuple[Objective, ...]
    study_name: str
    storage: str
    trials: tuple[TrialRecord, ...]
    best: TrialRecord | None
    pareto: tuple[TrialRecord, ...]
    wall_time_s: float = 0.0

    @property
    def selection(self) -> str:
        """How :attr:`best` was picked (see :data:`SELECTION_RULES`)."""
        return SELECTION_RULES[len(self.objectives)]

    @property
    def complete(self) -> tuple[TrialRecord, ...]:
        return tuple(t for t in self.trials if t.complete)

    @property
    def finished(self) -> tuple[TrialRecord, ...]:
        return tuple(t for t in self.trials if t.state in ("COMPLETE", "FAIL", "PRUNED"))


def run_trials(
    space: SpaceConfig,
    strategy: str,
    evaluator: TrialEvaluator,
    *,
    n_trials: int,
    seed: int,
    objectives: Sequence[str] = ("accuracy",),
    population: int = 10,
    sample_size: int = 3,
    storage: str | Path | BaseStorage | None = None,
    study_name: str | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = 3,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> TrialsResult:
    """Search ``space`` with ``strategy`` (``evolution``, ``nsga2`` or ``random``) until the study holds
    ``n_trials`` complete trials, scoring each sampled architecture with ``evaluator``.

    ``storage``: ``None`` keeps the study in memory; a journal file path or an Optuna storage URL (see
    :func:`~pflnas.multitrial.storage.open_storage`) lets several workers share it and lets a run continue
    later. With ``heartbeat_interval`` (seconds), a trial whose worker dies is failed after
    ``grace_period`` and retried with the same architecture (``max_retry`` times). ``callbacks`` run after
    each trial of this worker, as Optuna callbacks. An exception from the evaluator fails the trial and
    propagates.
    """
    objs = resolve_objectives(objectives)
    if n_trials < 1:
        raise ConfigError(f"n_trials must be >= 1, got {n_trials}")
    if strategy == "evolution" and len(objs) > 1:
        raise ConfigError(
            "regularized evolution optimises accuracy alone; use --strategy nsga2 for two objectives"
        )
    dists = search_space(space)
    sampler = create_sampler(strategy, dists, seed=seed, population=population, sample_size=sample_size)
    if isinstance(storage, BaseStorage):
        store, where = storage, type(storage).__name__
    else:
        store = open_storage(
            storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retry=max_retry
        )
        where = "memory" if storage is None else redact(str(storage))
    name = study_name or f"{space.name}-{strategy}-seed{seed}"
    start = time.perf_counter()
    with _quiet_optuna():
        study = optuna.create_study(
            storage=store,
            sampler=sampler,
            study_name=name,
            directions=[o.direction for o in objs],
            load_if_exists=True,
        )
        _claim_study(study, space, strategy, objs, where)

        objective = _Objective(space, evaluator, objs)
        _optimize(study, objective, n_trials, [MaxTrialsCallback(n_trials, states=_DONE), *callbacks])
    return collect_result(study, space, strategy, objs, where, time.perf_counter() - start)


_DONE = (TrialState.COMPLETE,)


class _Objective:
    """The Optuna objective: sample, evaluate, record. Remembers how its last call ended, so that a trial
    which another worker failed as stale while it ran (a late heartbeat) can be told from a real error."""

    def __init__(self, space: SpaceConfig, evaluator: TrialEvaluator, objectives: Sequence[Objective]):
        self.space, self.evaluator, self.objectives = space, evaluator, objectives
        self.trial_id: int | None = None
        self.taken_over = False

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        self.trial_id, self.taken_over = trial._trial_id, False
        trial.set_user_attr(WORKER_ATTR, worker_name())
        try:
            arch = suggest_architecture(trial, self.space)
            metrics = {k: float(v) for k, v in self.evaluator(arch).items()}
            values = objective_values(metrics, self.objectives)
            self.taken_over = True  # from here on, a failure can only come from the storage
            trial.set_user_attr(METRICS_ATTR, metrics)
        except UpdateFinishedTrialError:
            self.taken_over = True
            raise
        return values


def _optimize(
    study: optuna.Study,
    objective: _Objective,
    n_trials: int,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]],
) -> None:
    """Run trials until the study holds ``n_trials`` complete ones. A trial of this worker that another
    worker failed as stale meanwhile is left to its queued retry, and this worker goes on."""
    lost = 0
    while (done := len(study.get_trials(deepcopy=False, states=_DONE))) < n_trials:
        try:
            study.optimize(objective, n_trials=n_trials - done, callbacks=callbacks, gc_after_trial=False)
            return
        except (UpdateFinishedTrialError, ValueError):
            tid = objective.trial_id
            if not (
                objective.taken_over
                and tid is not None
                and study._storage.get_trial(tid).state == TrialState.FAIL
            ):
                raise
            lost += 1
            number = study._storage.get_trial(tid).number
            _logger.warning(
                f"trial {number} was failed by another worker while this one ran it (its heartbeat came "
                "late); its retry is queued and this worker goes on"
            )
            if lost > n_trials:
                raise ConfigError(
                    f"{lost} trials of this worker were failed as stale while they ran; raise "
                    "trials.heartbeat_interval / trials.grace_period"
                ) from None


def collect_result(
    study: optuna.Study,
    space: SpaceConfig,
    strategy: str,
    objectives: Sequence[Objective],
    storage: str = "",
    wall_time_s: float = 0.0,
) -> TrialsResult:
    """A :class:`TrialsResult` of every trial in ``study``."""
    records = tuple(_record(t, space) for t in study.get_trials(deepcopy=False))
    front = pareto_front([t for t in records if t.complete and t.architecture is not None], objectives)
    return TrialsResult(
        space=space,
        strategy=strategy,
        objectives=tuple(objectives),
        study_name=study.study_name,
        storage=storage,
        trials=records,
        best=choose(front, objectives),
        pareto=front,
        wall_time_s=wall_time_s,
    )


def pareto_front(trials: Sequence[TrialRecord], objectives: Sequence[Objective]) -> tuple[TrialRecord, ...]:
    """The complete trials no other trial dominates, by increasing cost (then decreasing accuracy)."""
    scored = [t for t in trials if t.values is not None]
    front = [t for t in scored if not any(dominates(o.values, t.values, objectives) for o in scored)]  # type: ignore[arg-type]
    return tuple(sorted(front, key=_front_order))


def choose(front: Sequence[TrialRecord], objectives: Sequence[Objective]) -> TrialRecord | None:
    """The chosen trial of a Pareto front (see :data:`SELECTION_RULES`)."""
    if not front:
        return None
    columns = list(zip(*(t.values for t in front)))  # type: ignore[misc]

    def goodness(i: int, value: float) -> float:
        lo, hi = min(columns[i]), max(columns[i])
        if hi == lo:
            return 1.0
        return (value - lo) / (hi - lo) if objectives[i].maximize else (hi - value) / (hi - lo)

    def key(t: TrialRecord) -> tuple[float, float, int]:
        assert t.values is not None
        distance = math.sqrt(sum((1.0 - goodness(i, v)) ** 2 for i, v in enumerate(t.values)))
        return (round(distance, 12), -t.values[0], t.number)

    return min(front, key=key)


def _front_order(t: TrialRecord) -> tuple[float, float, int]:
    assert t.values is not None
    cost = t.values[1] if len(t.values) > 1 else 0.0
    return (cost, -t.values[0], t.number)


def _record(t: FrozenTrial, space: SpaceConfig) -> TrialRecord:
    try:
        arch: Architecture | None = params_to_architecture(space, t.params)
    except PflnasError:
        arch = None
    complete = t.state == TrialState.COMPLETE
    duration = t.duration.total_seconds() if t.duration is not None else None
    retry_of = t.system_attrs.get("failed_trial")
    parent = t.system_attrs.get(PARENT_ATTR)
    return TrialRecord(
        number=t.number,
        state=t.state.name,
        params=dict(t.params),
        values=tuple(float(v) for v in t.values) if complete and t.values is not None else None,
        metrics=dict(t.user_attrs.get(METRICS_ATTR) or {}),
        architecture=arch,
        retry_of=int(retry_of) if retry_of is not None else None,
        parent=int(parent) if parent is not None else None,
        duration_s=duration,
        worker=t.user_attrs.get(WORKER_ATTR),
    )


def worker_name() -> str:
    """``host:pid`` of this process, the worker of the trials it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _claim_study(
    study: optuna.Study, space: SpaceConfig, strategy: str, objectives: Sequence[Objective], where: str
) -> None:
    """Tag a new study with what it searches; refuse to add trials of another search to an existing one."""
    mine = {"space": space.to_dict(), "strategy": strategy, "objectives": [o.name for o in objectives]}
    # Trials first: a worker starting alongside may tag the study and start a trial between the two reads,
    # and pflnas tags before its first trial, so trials without a tag read after them mean another program.
    trials = study.get_trials(deepcopy=False)
    theirs = study.user_attrs.get(STUDY_ATTR)
    if theirs is None:
        if trials:
            raise ConfigError(
                f"study {study.study_name!r} in {where} was not started by pflnas; choose another --study"
            )
        study.set_user_attr(STUDY_ATTR, mine)
        return
    if json.dumps(theirs, sort_keys=True) != json.dumps(mine, sort_keys=True):
        raise ConfigError(
            f"study {study.study_name!r} in {where} belongs to another search (space "
            f"{theirs.get('space', {}).get('name')!r}, strategy {theirs.get('strategy')!r}, objectives "
            f"{theirs.get('objectives')}); give a new --study name or the same settings"
        )


class _quiet_optuna:
    """Optuna at WARNING (its per-trial INFO lines list every parameter) without experimental warnings."""

    def __enter__(self) -> None:
        self._level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore", ExperimentalWarning)

    def __exit__(self, *exc: object) -> None:
        self._warnings.__exit__(*exc)
        optuna.logging.set_verbosity(self._level)
