"""Crash safety: a search and a retrain killed again and again -- SIGKILL at seeded random moments, SIGKILL
inside a checkpoint write, SIGTERM / SIGINT (which save a checkpoint, print how to resume and exit with 143 /
130) -- and resumed each time end exactly as a run that was never interrupted: the same found.json and
metrics (search), the same final weights and metrics (retrain). Plus the pieces: torn metrics lines,
leftover temp files, the signal handler.

The runs are separate processes forked from a server that imported pflnas once (see ``_tiny_runs``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import time
from pathlib import Path

import pytest
import torch
from _tiny_runs import Launcher, retrain_argv, search_argv, tiny_archive

from pflnas.train.checkpoint import remove_stale_temp_files
from pflnas.train.metrics import MetricsLog
from pflnas.train.signals import RunInterrupted, RunTerminated, StopSignals

SEARCH_EPOCHS = 7  # 2 steps each (data.subset=32)
SEARCH_SETS = ("data.subset=32",)
RETRAIN_EPOCHS = 6  # 6 steps each, a checkpoint every 2


@pytest.fixture(scope="module")
def launcher() -> Launcher:
    return Launcher()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    return tiny_archive(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture
def env(session_cache) -> dict[str, str]:
    return {"PFLNAS_CACHE": session_cache, "OMP_NUM_THREADS": "1"}


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns  # an atomic replace gives a new inode


def _wait_for_new(path: Path, proc, timeout: float = 120.0) -> None:
    """Wait until ``path`` is (re)written by ``proc``: the run is past its set-up and making progress."""
    before = _stamp(path)
    deadline = time.monotonic() + timeout
    while _stamp(path) in (before, None):
        assert proc.is_alive(), f"the run ended (exit code {proc.exitcode}) before writing {path.name}"
        assert time.monotonic() < deadline, f"no new {path.name} within {timeout} s"
        time.sleep(0.005)


def _interrupt(launcher, argv, env, log, watch: Path, sig: int, delay: float, **kw) -> int:
    """Start ``argv``; once it has written ``watch`` anew, wait ``delay`` s and send ``sig``."""
    proc = launcher.start(argv, env, log, **kw)
    _wait_for_new(watch, proc)
    time.sleep(delay)
    assert proc.is_alive(), "the run finished before the signal: make the runs longer"
    os.kill(proc.pid, sig)
    proc.join(60)
    return proc.exitcode


def _where(ckpt: Path) -> str:
    """Where the checkpoint a killed run left stands (printed: ``pytest -s`` shows the kill points)."""
    state = torch.load(ckpt, weights_only=True)
    return f"epoch {state['epoch']} step {state['step']}"


def _finish(launcher, argv, env, log, **kw) -> int:
    proc = launcher.start(argv, env, log, **kw)
    proc.join(300)
    return proc.exitcode


def _rows(path: Path, drop: tuple[str, ...]) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in drop} for row in rows]


def _epoch_time(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return sum(r["epoch_time"] for r in rows) / len(rows)


@pytest.mark.slow
def test_search_interrupted_five_times_resumes_to_the_same_result(tmp_path, source, env, launcher):
    full, cut = tmp_path / "full", tmp_path / "cut"
    log = tmp_path / "log.txt"
    assert _finish(launcher, search_argv(source, full, SEARCH_EPOCHS, *SEARCH_SETS), env, log) == 0, (
        log.read_text()
    )
    epoch = _epoch_time(full)
    rng = random.Random(8)
    ckpt = cut / "checkpoint.pt"
    resume = ["search", "--resume", str(cut)]

    # 1. SIGKILL at a random moment once training runs
    argv = search_argv(source, cut, SEARCH_EPOCHS, *SEARCH_SETS)
    assert _interrupt(launcher, argv, env, log, ckpt, signal.SIGKILL, rng.uniform(0, epoch)) == -9
    print("search SIGKILL 1: checkpoint at", _where(ckpt))
    # 2. SIGKILL inside the next checkpoint write: the temp file is complete, the rename never happens
    before = ckpt.read_bytes()
    assert _finish(launcher, resume, env, log, kill_in_write="checkpoint.pt") == -signal.SIGKILL
    assert ckpt.read_bytes() == before and list(cut.glob(".checkpoint.pt.*.tmp"))
    # 3. SIGTERM at a random moment: a checkpoint (inside the epoch, as a rule), one line, exit code 143
    assert _interrupt(launcher, resume, env, log, ckpt, signal.SIGTERM, rng.uniform(0, epoch)) == 143
    print("search SIGTERM: checkpoint at", _where(ckpt))
    # 4. SIGINT inside an epoch, at a chosen step: the checkpoint records the step and the epoch's sums
    e0 = torch.load(ckpt, weights_only=True)["epoch"]
    assert _finish(launcher, resume, env, log, signal_at=(signal.SIGINT, e0 + 1, 0)) == 130
    saved = torch.load(ckpt, weights_only=True)
    assert (saved["epoch"], saved["step"]) == (e0 + 1, 1) and len(saved["partial"]) == 1
    assert f"checkpoint saved; resume with: pflnas search --resume {cut}" in log.read_text()
    assert not list(cut.glob(".*.tmp"))  # the resume cleared the killed write's temp file
    saved = torch.load(ckpt, weights_only=True)
    assert 0 <= saved["step"] <= 2 and (saved["step"] == 0) == (saved["partial"] is None)
    # 5. SIGKILL at a random moment again
    assert _interrupt(launcher, resume, env, log, ckpt, signal.SIGKILL, rng.uniform(0, epoch)) == -9
    print("search SIGKILL 2: checkpoint at", _where(ckpt))
    assert not (cut / "found.json").exists()

    assert _finish(launcher, resume, env, log) == 0, log.read_text()
    a, b = (json.loads((run / "found.json").read_text()) for run in (full, cut))
    assert a["cells"] == b["cells"]
    assert a["probabilities"] == b["probabilities"]
    drop = ("epoch_time",)
    assert _rows(full / "metrics.jsonl", drop) == _rows(cut / "metrics.jsonl", drop)


@pytest.mark.slow
def test_retrain_interrupted_five_times_resumes_to_the_same_weights(tmp_path, source, env, launcher):
    full, cut = tmp_path / "full", tmp_path / "cut"
    log = tmp_path / "log.txt"
    extra = ("run.checkpoint_every=2",)
    argv = retrain_argv(source, full, RETRAIN_EPOCHS, *extra)
    assert _finish(launcher, argv, env, log) == 0, log.read_text()
    epoch = _epoch_time(full)
    rng = random.Random(9)
    last = cut / "last.pt"
    resume = ["retrain", "--resume", str(cut)]

    argv = retrain_argv(source, cut, RETRAIN_EPOCHS, *extra)
    assert _interrupt(launcher, argv, env, log, last, signal.SIGKILL, rng.uniform(0, epoch)) == -9
    print("retrain SIGKILL 1: checkpoint at", _where(last))
    before = last.read_bytes()
    assert _finish(launcher, resume, env, log, kill_in_write="last.pt") == -signal.SIGKILL
    assert last.read_bytes() == before and list(cut.glob(".last.pt.*.tmp"))
    assert _interrupt(launcher, resume, env, log, last, signal.SIGINT, rng.uniform(0, epoch)) == 130
    print("retrain SIGINT: checkpoint at", _where(last))
    e0 = torch.load(last, weights_only=True)["epoch"]  # SIGTERM at step 3 of the next epoch (no save due)
    assert _finish(launcher, resume, env, log, signal_at=(signal.SIGTERM, e0 + 1, 2)) == 143
    assert "pflnas retrain: stopped by SIGTERM at epoch" in log.read_text()
    saved = torch.load(last, weights_only=True)
    assert (saved["epoch"], saved["step"]) == (e0 + 1, 3) and len(saved["partial"]) == 1
    assert f"checkpoint saved; resume with: pflnas retrain --resume {cut}" in log.read_text()
    assert _interrupt(launcher, resume, env, log, last, signal.SIGKILL, rng.uniform(0, epoch)) == -9
    print("retrain SIGKILL 2: checkpoint at", _where(last))

    assert _finish(launcher, resume, env, log) == 0, log.read_text()
    for name in ("last.pt", "best.pt"):
        a, b = (torch.load(run / name, weights_only=True) for run in (full, cut))
        assert a["epoch"] == b["epoch"] and a["model"].keys() == b["model"].keys()
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (name, key)
    drop = ("epoch_time", "images_per_s")
    assert _rows(full / "metrics.jsonl", drop) == _rows(cut / "metrics.jsonl", drop)


# --- the pieces ------------------------------------------------------------------------------------------
def test_metrics_log_drops_a_torn_last_line_and_truncates_to_the_checkpoint(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for epoch in range(3):
        log.append({"epoch": epoch, "loss": 1.0 / (epoch + 1)})
    with log.path.open("a") as fh:
        fh.write('{"epoch": 3, "loss": 0.2')  # killed in the middle of an append
    assert [r["epoch"] for r in log.read()] == [0, 1, 2]
    log.truncate_to(2)  # the checkpoint holds 2 epochs: records of later ones are redone
    assert log.path.read_text() == "".join(
        json.dumps({"epoch": e, "loss": 1.0 / (e + 1)}) + "\n" for e in (0, 1)
    )
    log.append({"epoch": 2, "loss": 0.5})
    assert [r["epoch"] for r in log.read()] == [0, 1, 2]


def test_stale_temp_files_are_removed_and_nothing_else(tmp_path):
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / "checkpoint.pt").write_bytes(b"whole")
    (tmp_path / "notes.tmp").write_text("a user's file")
    removed = remove_stale_temp_files(tmp_path)
    assert [p.name for p in removed] == [".checkpoint.pt.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "notes.tmp"]


@pytest.mark.parametrize(
    "sig, exc, code", [(signal.SIGTERM, RunTerminated, 143), (signal.SIGINT, RunInterrupted, 130)]
)
def test_stop_signals_set_a_flag_then_stop_at_once(sig, exc, code):
    previous = signal.getsignal(sig)
    with StopSignals() as stop:
        assert not stop.requested()
        os.kill(os.getpid(), sig)
        assert stop.requested() and stop.signum == sig
        with pytest.raises(exc) as err:  # a second signal does not wait for the step to end
            os.kill(os.getpid(), sig)
        assert err.value.exit_code == code
    assert signal.getsignal(sig) is previous


def test_stop_signals_agree_over_ranks():
    """torchrun: the ranks poll together every few steps; one rank's SIGTERM stops every rank with 143."""
    other = torch.tensor([1, 1])  # another rank got SIGTERM

    stop = StopSignals(reduce=lambda t: t + other)
    assert not stop.requested(step=0)  # not a polling step
    assert stop.requested(step=9) and stop.signum == signal.SIGTERM
    assert StopSignals(reduce=lambda t: t).requested(step=9) is False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(launcher, argv, env, log, **kw) -> list[int]:
    """Run ``argv`` as 2 ranks (gloo, as torchrun would start them); keyword args go to rank 1 only."""
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"}
        rank_env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(launcher.start(argv, rank_env, log, **(kw if rank == 1 else {})))
    for proc in procs:
        proc.join(300)
    return [proc.exitcode for proc in procs]


@pytest.mark.slow
def test_sigterm_on_one_rank_stops_both_inside_the_epoch_and_resumes_exactly(tmp_path, env, launcher):
    """torchrun: a SIGTERM that reaches rank 1 only stops both ranks at the same step (they poll together
    every 10 steps), rank 0 saves every rank's running sums and BatchNorm statistics, and two ranks resume
    to the same record as an uninterrupted run."""
    sets = ("data.subset=120", "data.batch_size=4", "run.device=cpu")  # 15 steps of 2 images per rank
    source = tiny_archive(tmp_path / "data", n_train=12)
    full, cut = tmp_path / "full", tmp_path / "cut"
    log = tmp_path / "log.txt"
    assert _two_ranks(launcher, search_argv(source, full, 1, *sets), env, log) == [0, 0]
    argv = search_argv(source, cut, 1, *sets)
    assert _two_ranks(launcher, argv, env, log, signal_at=(signal.SIGTERM, 0, 3)) == [143, 143]
    saved = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (0, 10) and len(saved["buffers_ranks"]) == 2
    assert log.read_text().count("stopped by SIGTERM at epoch 1 step 10") == 1  # rank 0 says it
    assert _two_ranks(launcher, ["search", "--resume", str(cut)], env, log) == [0, 0]
    a, b = (json.loads((run / "found.json").read_text()) for run in (full, cut))
    assert a["cells"] == b["cells"] and a["probabilities"] == b["probabilities"]
    drop = ("epoch_time",)
    assert _rows(full / "metrics.jsonl", drop) == _rows(cut / "metrics.jsonl", drop)
