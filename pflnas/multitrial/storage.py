"""Where a multi-trial study lives: a journal file (default), a Redis journal, or any SQLAlchemy URL.

Optuna 5.0 implements trial heartbeats only for :class:`~optuna.storages.RDBStorage`. A journal file is the
serverless default here, so :class:`HeartbeatJournalStorage` adds heartbeats to the journal: each running
trial's worker appends its wall-clock time as a trial system attribute every ``heartbeat_interval`` seconds,
and a running trial whose last heartbeat is older than ``grace_period`` counts as dead. Optuna then fails
it (at the start of any worker's next trial) and :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`
enqueues a copy with the same parameters, so no trial is lost. Workers on several machines compare wall
clocks, which therefore must agree to well within the grace period (NTP does).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from pflnas.config.redact import redact_url
from pflnas.errors import ConfigError
from pflnas.multitrial.rdb import open_rdb_storage

HEARTBEAT_ATTR = "pflnas:heartbeat"  # trial system attr: wall-clock time (s) of the worker's last heartbeat

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A :class:`~optuna.storages.JournalStorage` with trial heartbeats (see the module docstring)."""

    def __init__(
        self,
        backend: BaseJournalBackend,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        stale_trial_callback: StaleCallback | None = None,
    ) -> None:
        for name, value in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        # another worker may already have failed this trial as stale (and queued its retry)
        with contextlib.suppress(UpdateFinishedTrialError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self.heartbeat_interval is not None
        grace = self.grace_period or 2 * self.heartbeat_interval
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        # A running trial without any heartbeat belongs to a worker that does not send them: leave it alone.
        return [
            t._trial_id
            for t in running
            if HEARTBEAT_ATTR in t.system_attrs and now - float(t.system_attrs[HEARTBEAT_ATTR]) > grace
        ]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self.stale_trial_callback


def open_storage(
    url: str | Path | None,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = 3,
) -> BaseStorage:
    """The storage behind ``url``.

    ``None``: in memory (one process). A string with ``://``: ``redis://...`` is a Redis journal, anything
    else a SQLAlchemy URL for :class:`~optuna.storages.RDBStorage` (``sqlite:///f.db``,
    ``postgresql://user@host/db``; see :mod:`~pflnas.multitrial.rdb`). Any other string is the path of a
    journal file, created if missing.
    With ``heartbeat_interval``, trials whose worker stops beating for ``grace_period`` seconds (default
    twice the interval) are failed and retried up to ``max_retry`` times (``None``: without limit).
    """
    if url is None:
        return optuna.storages.InMemoryStorage()
    text = str(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry) if heartbeat_interval else None
        heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
        if "://" not in text:
            path = Path(text)
            if path.exists() and not path.is_file():
                raise ConfigError(f"trials.storage {text} is not a file; give a journal file path or a URL")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                backend = JournalFileBackend(str(path))
            except OSError as exc:
                raise ConfigError(f"cannot open the journal file {text} ({exc.strerror})") from None
            return HeartbeatJournalStorage(backend, stale_trial_callback=retry, **heartbeat)
        if text.startswith(("redis://", "rediss://", "unix://")):
            from optuna.storages.journal import JournalRedisBackend

            return HeartbeatJournalStorage(JournalRedisBackend(text), stale_trial_callback=retry, **heartbeat)
        return open_rdb_storage(text, heartbeat_stale_trial_callback=retry, **heartbeat)


def redact(url: str) -> str:
    return redact_url(url)
