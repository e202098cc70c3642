"""One multi-trial study on a real PostgreSQL server shared by three ``pflnas search`` workers, one of them
killed mid-trial: the study still completes, no trial is lost or run twice, the killed trial is failed by
a surviving worker once its heartbeat is stale and retried with the same architecture, and each surviving
run directory reports the study consistently. The server is a throwaway one (:mod:`_postgres`); the test
skips, saying why, only where no server can run (no binaries, no psycopg)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from _postgres import PostgresServer, Unavailable, start_server

from pflnas.arch import load_architecture
from pflnas.cli.main import main
from pflnas.config.redact import redact_url
from pflnas.data.load import load_dataset
from pflnas.errors import ConfigError
from pflnas.multitrial import (
    ArchRandomSampler,
    open_storage,
    params_to_architecture,
    search_space,
    suggest_architecture,
)
from pflnas.multitrial.runner import WORKER_ATTR
from pflnas.spaces.config import space_from_dict

REPO = Path(__file__).resolve().parents[1]
STUDY, SEED = "shared", 0
# 24 trials of ~0.3-0.8 s each: the two survivors still start trials seconds after the kill, past the grace
# period, so one of them fails the killed trial (a slower machine only lengthens that margin)
N_TRIALS, HEARTBEAT_S, GRACE_S = 24, 1, 2
PASSWORD_VAR, SECRET = "PFLNAS_TEST_PGPASSWORD", "hunter2-must-not-be-written"
TINY = [
    *("--set", "space.init_channels=4", "--set", "space.layers=3", "--set", "data.subset=64"),
    *("--set", "data.batch_size=16", "--set", "data.eval_limit=32", "--set", "trials.epochs=2"),
    *("--set", f"trials.heartbeat_interval={HEARTBEAT_S}", "--set", f"trials.grace_period={GRACE_S}"),
    *("--set", "run.threads=1", "--device", "cpu", "--seed", str(SEED)),
]


@pytest.fixture(scope="module")
def postgres():
    try:
        server = start_server()
    except Unavailable as exc:
        pytest.skip(f"no PostgreSQL server can run here: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_three_workers_share_a_postgres_study_and_survive_a_kill(
    postgres: PostgresServer, tmp_path, cifar_source, session_cache, monkeypatch
):
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)
    load_dataset("cifar10", cifar_source, download=False)  # decode once here, not in three workers at once
    postgres.create_database("study")
    url = postgres.url("study", password=f"${{{PASSWORD_VAR}}}")  # trust auth: any password is accepted
    outs = [tmp_path / f"worker{i}" for i in range(3)]
    logs = [open(tmp_path / f"worker{i}.log", "w+") for i in range(3)]  # noqa: SIM115 - closed below
    env = {**os.environ, "PFLNAS_CACHE": session_cache, PASSWORD_VAR: SECRET}
    search = [sys.executable, "-m", "pflnas", "search", "--space", "cell_v1", "--strategy", "random"]
    shared = ["--trials", str(N_TRIALS), "--storage", url, "--study", STUDY, "--data-dir", cifar_source]
    workers = [
        subprocess.Popen(
            [*search, *shared, *TINY, "--out", str(out)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for out, log in zip(outs, logs)
    ]
    storage = open_storage(url.replace(f"${{{PASSWORD_VAR}}}", SECRET))
    space = _space(outs, workers, logs)
    try:
        victim, killed = _kill_one_mid_trial(workers, storage, space, logs)
        survivors = [w for w in workers if w is not victim]
        deadline = time.monotonic() + 240
        for w in survivors:
            rc = w.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert rc == 0, f"worker {w.pid} exited {rc}: {_tail(logs[workers.index(w)])}"
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
            w.wait()
    output = [_tail(log, 100_000) for log in logs]
    for log in logs:
        log.close()

    trials = _study_trials(storage)
    _check_study(trials, killed, victim.pid)
    _check_sampled_architectures(trials, space)
    for i, (out, w) in enumerate(zip(outs, workers)):
        if w is victim:
            assert not (out / "found.json").exists()  # killed before it could report
        else:
            _check_run_directory(out, trials, space, output[i])
    written = [p.read_text(errors="replace") for out in outs for p in out.rglob("*") if p.is_file()]
    assert not any(SECRET in text for text in [*written, *output])  # the password stays in the environment
    assert f"${{{PASSWORD_VAR}}}" in (outs[0] / "config.yaml").read_text()


def _kill_one_mid_trial(workers, storage, space, logs) -> tuple[subprocess.Popen, optuna.trial.FrozenTrial]:
    """SIGKILL a worker that has finished a trial and is training another (every choice made). It is stopped
    first (SIGSTOP) and only killed if that trial is still running, so the kill always lands mid-trial."""
    by_pid = {w.pid: w for w in workers}
    n_choices = len(search_space(space))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for i, w in enumerate(workers):
            assert w.poll() is None, f"worker {w.pid} exited {w.returncode} early: {_tail(logs[i])}"
        trials = _study_trials(storage)
        finished = {_pid(t) for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
        for t in trials:
            pid = _pid(t)
            training = t.state == optuna.trial.TrialState.RUNNING and len(t.params) == n_choices
            if not training or pid not in by_pid or pid not in finished:
                continue
            os.kill(pid, signal.SIGSTOP)
            if storage.get_trial(t._trial_id).state == optuna.trial.TrialState.RUNNING:
                os.kill(pid, signal.SIGKILL)
                by_pid[pid].wait()
                return by_pid[pid], storage.get_trial(t._trial_id)
            os.kill(pid, signal.SIGCONT)  # it finished that trial meanwhile: try again
        time.sleep(0.05)
    raise AssertionError(f"no worker was seen mid-trial after finishing one: {[_tail(log) for log in logs]}")


def _check_study(trials: list[optuna.trial.FrozenTrial], killed: optuna.trial.FrozenTrial, victim: int):
    """Every trial number once; the killed trial failed and retried exactly once with its architecture;
    every other failure (a late heartbeat on a busy machine) retried the same way; nothing left running."""
    state = optuna.trial.TrialState
    assert [t.number for t in trials] == list(range(len(trials)))
    assert killed.state == state.RUNNING and _pid(killed) == victim  # it was mid-trial when killed
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state == state.FAIL, (
        f"trial {killed.number} of the killed worker is {by_number[killed.number].state.name}: the survivors "
        f"finished the study within the {GRACE_S} s grace period; raise N_TRIALS"
    )
    assert {t.state for t in trials} <= {state.COMPLETE, state.FAIL}
    complete = [t for t in trials if t.state == state.COMPLETE]
    assert N_TRIALS <= len(complete) <= N_TRIALS + 1  # a survivor mid-trial at the count finishes it
    for failed in (t for t in trials if t.state == state.FAIL):
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == failed.number]
        assert len(retries) == 1, f"trial {failed.number} was retried {len(retries)} times"
        assert retries[0].state == state.COMPLETE and retries[0].params == failed.params
        assert retries[0].number > failed.number and _pid(retries[0]) != victim


def _check_sampled_architectures(trials: list[optuna.trial.FrozenTrial], space) -> None:
    """Trials that are not retries hold the architecture the seeded sampler draws for their number, as
    one worker alone would have drawn it: no worker skipped or repeated a number."""
    sampler = ArchRandomSampler(search_space(space), seed=SEED)
    alone = optuna.create_study(sampler=sampler)
    for t in trials:
        expected = alone.ask()
        suggest_architecture(expected, space)
        if "failed_trial" not in t.system_attrs:
            assert t.params == expected.params, f"trial {t.number}"


def _check_run_directory(out: Path, trials: list[optuna.trial.FrozenTrial], space, output: str) -> None:
    """found.json, trials.csv and metrics.jsonl of a surviving worker agree with the study and each other."""
    assert "found architecture" in output
    rows = list(csv.DictReader((out / "trials.csv").open()))
    by_number = {t.number: t for t in trials}
    for row in rows:  # the study as this worker saw it at its end: finished trials are final
        trial = by_number[int(row["number"])]
        if row["state"] in ("COMPLETE", "FAIL"):
            assert row["state"] == trial.state.name
            assert row["worker"] == trial.user_attrs[WORKER_ATTR]
        if row["state"] == "COMPLETE":
            assert float(row["accuracy"]) == pytest.approx(trial.values[0], abs=1e-6)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    arch = load_architecture(out / "found.json")
    prov = arch.provenance
    assert prov["study"] == STUDY and prov["trials_complete"] == len(complete) >= N_TRIALS
    best = max(complete, key=lambda r: (float(r["accuracy"]), -int(r["number"])))
    assert prov["trial"] == int(best["number"])
    assert arch.decisions() == params_to_architecture(space, by_number[prov["trial"]].params).decisions()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["trial"] for m in metrics] == [int(r["number"]) for r in complete]
    assert metrics[-1]["incumbent"] == prov["trial"]
    assert metrics[-1]["val_acc"] == prov["objectives"]["accuracy"]


def _space(outs: list[Path], workers, logs):
    """The resolved search space, from the config.yaml the first worker writes."""
    deadline = time.monotonic() + 120
    while not any((out / "config.yaml").is_file() for out in outs):
        assert all(w.poll() is None for w in workers), [_tail(log) for log in logs]
        assert time.monotonic() < deadline, "no worker wrote its config.yaml"
        time.sleep(0.1)
    config = next(out / "config.yaml" for out in outs if (out / "config.yaml").is_file())
    return space_from_dict(yaml.safe_load(config.read_text())["resolved_space"], str(config))


def _study_trials(storage) -> list[optuna.trial.FrozenTrial]:
    try:
        study_id = storage.get_study_id_from_name(STUDY)
    except KeyError:
        return []
    return sorted(storage.get_all_trials(study_id, deepcopy=False), key=lambda t: t.number)


def _pid(trial: optuna.trial.FrozenTrial) -> int | None:
    worker = trial.user_attrs.get(WORKER_ATTR)
    return int(worker.rpartition(":")[2]) if worker else None


def _tail(log, n: int = 3000) -> str:
    log.flush()
    return Path(log.name).read_text(errors="replace")[-n:]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # filters race in threads
def test_workers_that_open_a_fresh_database_together_all_get_the_study(postgres: PostgresServer):
    """Concurrent CREATE TABLEs on a fresh PostgreSQL database fail but for one (a unique violation in
    pg_type); workers take turns under an advisory lock instead."""
    postgres.create_database("fresh")
    barrier, errors = threading.Barrier(4), []

    def worker() -> None:
        barrier.wait()
        try:
            open_storage(postgres.url("fresh"), heartbeat_interval=1)
        except ConfigError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)


def test_an_unreachable_server_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot open trials.storage postgresql://u:\*\*\*@/db.*connect"):
        open_storage(f"postgresql://u:secret@/db?host={tmp_path}")


def test_a_missing_driver_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails, as without the extra
    with pytest.raises(ConfigError, match=r"no PostgreSQL driver.*pip install 'pflnas\[postgres\]'"):
        open_storage("postgresql+psycopg://u@/db?host=/nonexistent")


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://:secret@h/db", "postgresql://:***@h/db"),  # no user name
        ("postgresql://u:p@ss@h:5432/db", "postgresql://u:***@h:5432/db"),  # an unescaped @ in it
        ("postgresql://u@/db?host=/s&password=secret&x=1", "postgresql://u@/db?host=/s&password=***&x=1"),
        ("redis://:secret@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://u:${PGPASSWORD}@h/db", "postgresql://u:${PGPASSWORD}@h/db"),  # read when connecting
        ("postgresql://u:$PGPASSWORD@h/db", "postgresql://u:$PGPASSWORD@h/db"),
        ("postgresql://h:5432/db", "postgresql://h:5432/db"),  # a port is no password
    ],
)
def test_storage_url_passwords_are_redacted(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "storage, message",
    [
        ("postgresql://u@h/db?password=secret", "PGPASSWORD"),
        ("postgresql:/u@h/db", "without '://'"),  # as a journal path it would split the study silently
        ("postgresql//u@h/db", "without '://'"),
    ],
)
def test_bad_storage_urls_are_refused_before_anything_runs(tmp_path, capsys, storage, message):
    args = ["search", "--space", "cell_v1", "--strategy", "random", "--storage", storage]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "secret" not in err
    assert not (tmp_path / "o").exists()


def test_an_unreachable_database_fails_before_the_run_directory_is_written(tmp_path, capsys):
    url = f"postgresql://u:${{{PASSWORD_VAR}}}@/db?host={tmp_path}"  # no server listens in tmp_path
    args = ["search", "--space", "cell_v1", "--strategy", "random", "--storage", url, "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cannot open trials.storage" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
