"""Run directories (issue 15): one process at a time, never a folder pflnas did not write, never through a
symlink. Every case runs for each command that writes a run directory (search, retrain, study, bench, and
the two ``--resume``\\ s); a command that gets past its directory checks stops at a stub ("REACHED"), so no
case trains anything.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _data_fixtures import make_tree
from _spaces import tiny

from pflnas.arch.homogeneous import homogeneous_architecture
from pflnas.arch.record import save_architecture
from pflnas.cli.main import main
from pflnas.errors import ConfigError, PflnasError
from pflnas.rundir import LOCK, MARKER, hold, lock_run_dir, mark, run_kind
from pflnas.train.checkpoint import load_checkpoint
from pflnas.utils_io import open_log

REPO = Path(__file__).resolve().parents[1]
REACHED = "REACHED the run"
FOUND = REPO / "experiments" / "archs" / "quick_cell_v1_s0.json"


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rundir")
    make_tree(root / "data", n_train=2, n_test=1)
    found = save_architecture(homogeneous_architecture(tiny("cell_v1"), "max_pool_3x3"), root / "found.json")
    study = {
        "name": "t",
        "search": {"set": {"run.epochs": 1}},
        "grid": {"spaces": ["nb201"], "strategies": ["darts"], "seeds": [0]},
    }
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    return {"data": root / "data", "found": found, "study": root / "study.yaml"}


@pytest.fixture(autouse=True)
def stub_runs(monkeypatch, tmp_path):
    """Whatever gets past the directory checks raises REACHED instead of running."""

    def reached(*args, **kwargs):
        raise PflnasError(REACHED)

    import pflnas.analysis.report as report
    import pflnas.cli.cmd_bench as cmd_bench
    import pflnas.train.retrain as retrain
    import pflnas.train.search as search

    monkeypatch.setattr(search.SearchRun, "setup", reached)
    monkeypatch.setattr(retrain.RetrainRun, "setup", reached)
    monkeypatch.setattr("pflnas.study.run_study", reached)  # pflnas study imports it when it runs
    monkeypatch.setattr(cmd_bench, "_bench_nb201", reached)
    monkeypatch.setattr(report, "_write_kind", reached)
    monkeypatch.setenv("PFLNAS_CACHE", str(tmp_path / "cache"))


def _argv(command: str, out: Path, fx: dict[str, Path], overwrite: bool = True) -> list[str]:
    """A valid command line writing to ``out`` (with --overwrite where the command has it)."""
    again = ["--overwrite"] if overwrite else []
    if command == "search":
        return [
            "search",
            "--space",
            "nb201",
            "--epochs",
            "1",
            "--data-dir",
            str(fx["data"]),
            "--out",
            str(out),
        ] + again
    if command == "retrain":
        return ["retrain", "--arch", str(fx["found"]), "--recipe", "quick", "--data-dir", str(fx["data"]),
                "--out", str(out)] + again  # fmt: skip
    if command == "study":
        return ["study", str(fx["study"]), "--out", str(out)] + again
    if command == "bench":
        return ["bench", "nb201", "--op-wins", "--out", str(out)]
    if command == "report":
        return ["report", str(fx["data"]), "--out", str(out)]
    return [command.split("-")[0], "--resume", str(out)]  # search-resume, retrain-resume


WRITERS = ["search", "retrain", "study", "bench", "report"]


def _one_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _listing(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): p.read_text() if p.is_file() and not p.is_symlink() else "?"
        for p in sorted(folder.rglob("*"))
    }


def _run_dir(folder: Path, kind: str) -> Path:
    """A directory holding a run of ``kind`` that pflnas wrote (marker and the files a run has; the
    defaults for a config)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("{}\n")
    (folder / "arch.json").write_text(FOUND.read_text())
    (folder / "metrics.jsonl").write_text("")
    mark(folder, kind)
    return folder


# --- targets no flag makes acceptable ----
@pytest.mark.parametrize("target", ["root", "home", "cwd", "above_cwd", "repository"])
@pytest.mark.parametrize("command", WRITERS)
def test_out_that_is_or_holds_something_precious_is_refused_without_suggesting_overwrite(
    fx, tmp_path, monkeypatch, capsys, command, target
):
    home, work = tmp_path / "home", tmp_path / "home" / "work"
    work.mkdir(parents=True)
    (work / "notes.txt").write_text("mine")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    folder = {"root": Path("/"), "home": Path("~").expanduser(), "cwd": Path("."), "above_cwd": Path("..")}
    out = folder.get(target, REPO)
    before = sorted(os.listdir(out))
    line = _one_line(capsys, _argv(command, out, fx))
    assert "--overwrite" not in line and "give a new folder" in line, line
    assert sorted(os.listdir(out)) == before  # no lock file, no marker: nothing written


# --- --overwrite only on a directory pflnas wrote ----
@pytest.mark.parametrize("command", WRITERS)
def test_a_folder_pflnas_did_not_write_is_never_written_into(fx, tmp_path, capsys, command):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("lr: 0.1\n")  # the user's own config and log: not a run
    (out / "metrics.jsonl").write_text('{"loss": 1}\n')
    before = _listing(out)
    line = _one_line(capsys, _argv(command, out, fx))
    assert "is not a pflnas run directory" in line and "--overwrite" not in line, line
    assert _listing(out) == before


@pytest.mark.parametrize("command", ["search", "retrain"])
def test_overwrite_replaces_a_run_pflnas_wrote_and_only_with_the_flag(fx, tmp_path, capsys, command):
    out = _run_dir(tmp_path / "run", command)
    line = _one_line(capsys, _argv(command, out, fx, overwrite=False))
    assert f"is not empty; use --resume {out} to continue it or --overwrite" in line
    assert REACHED in _one_line(capsys, _argv(command, out, fx))
    other = _run_dir(tmp_path / "other", "retrain" if command == "search" else "search")
    assert "holds a pflnas" in _one_line(capsys, _argv(command, other, fx))


@pytest.mark.parametrize("command", ["study", "bench", "report"])
def test_a_study_bench_or_report_continues_only_in_its_own_kind_of_folder(fx, tmp_path, capsys, command):
    out = tmp_path / "run"
    out.mkdir()
    files = {
        "study": ["study.yaml", "runs/"],
        "bench": ["darts/", "darts/seed0.json"],  # a bench cut short before its summary
        "report": ["report.md", "report.html"],
    }
    for name in files[command]:
        (out / name).mkdir() if name.endswith("/") else (out / name).write_text("{}")
    assert run_kind(out) == command  # a folder from before markers, recognised by its files
    assert REACHED in _one_line(capsys, _argv(command, out, fx))
    assert "holds a pflnas search run" in _one_line(
        capsys, _argv(command, _run_dir(tmp_path / "s", "search"), fx)
    )


def test_runs_from_before_markers_are_recognised_by_their_files_only(tmp_path):
    search, retrain = tmp_path / "search", tmp_path / "retrain"
    for folder, key, other in (
        (search, "resolved_space", "metrics.jsonl"),
        (retrain, "network", "arch.json"),
    ):
        folder.mkdir()
        (folder / "config.yaml").write_text(f"run: {{}}\n{key}:\n  name: x\n")
        assert run_kind(folder) is None  # config.yaml alone is not a run
        (folder / other).write_text("")
    assert (run_kind(search), run_kind(retrain)) == ("search", "retrain")
    (search / "config.yaml").write_text("resolved_spaces: 1\n  resolved_space: 2\n")  # not the top-level key
    assert run_kind(search) is None
    (search / MARKER).write_text('{"kind": "nonsense"}')
    assert run_kind(search) is None


# --- --resume on what is not a run ----
@pytest.mark.parametrize("command", ["search", "retrain"])
def test_resume_of_a_folder_that_is_not_a_run_says_so(fx, tmp_path, capsys, command):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("lr: 0.1\n")
    (out / "arch.json").write_text("{}")
    line = _one_line(capsys, [command, "--resume", str(out)])
    assert f"is not a pflnas {command} run directory" in line and "unknown config key" not in line
    assert sorted(os.listdir(out)) == ["arch.json", "config.yaml"]  # no lock left in someone else's folder


# --- probes and pflnas's own files never follow a symlink ----
@pytest.mark.parametrize("name", [LOCK, MARKER, ".pflnas-write-test"])
@pytest.mark.parametrize("command", [*WRITERS, "search-resume", "retrain-resume"])
def test_a_symlink_at_an_own_file_name_never_reaches_its_target(fx, tmp_path, capsys, command, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    resume = command.endswith("-resume")
    out = _run_dir(tmp_path / "run", command.split("-")[0]) if resume else tmp_path / "run"
    out.mkdir(exist_ok=True)
    (out / name).unlink(missing_ok=True)
    (out / name).symlink_to(victim)
    line = _one_line(capsys, _argv(command, out, fx))
    assert victim.read_text() == "precious", line
    if name == LOCK:
        assert f"{out / LOCK} is a symlink" in line
    elif name == MARKER and not resume:
        assert REACHED in line and not (out / MARKER).is_symlink()  # replaced by a file of its own


@pytest.mark.parametrize("command", ["search", "search-resume", "study"])
def test_a_fifo_at_the_lock_name_is_one_line_not_a_hang(fx, tmp_path, capsys, command):
    out = _run_dir(tmp_path / "run", "search") if command.endswith("-resume") else tmp_path / "run"
    out.mkdir(exist_ok=True)
    os.mkfifo(out / LOCK)
    assert "is a FIFO" in _one_line(capsys, _argv(command, out, fx))


# --- the lock ----
HOLDER = """
import sys, time
from pflnas.rundir import lock_run_dir
lock = lock_run_dir(sys.argv[1])
print("ready", flush=True)
time.sleep(300)
"""


def _holder(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("command", [*WRITERS, "search-resume", "retrain-resume"])
def test_a_second_process_is_refused_at_once_and_a_killed_one_leaves_nothing_stuck(
    fx, tmp_path, capsys, command
):
    kind = command.split("-")[0]
    out = _run_dir(tmp_path / "run", kind) if kind in ("search", "retrain") else tmp_path / "run"
    holder = _holder(out)
    try:
        line = _one_line(capsys, _argv(command, out, fx))
        assert f"is in use by pid {holder.pid} on {socket.gethostname()} since " in line, line
    finally:
        holder.kill()  # SIGKILL: no chance to clean up; the kernel drops the lock
        holder.wait()
    assert json.loads((out / LOCK).read_text())["pid"] == holder.pid  # its note is still there ...
    assert REACHED in _one_line(capsys, _argv(command, out, fx))  # ... and the folder is not stuck


FORKING_HOLDER = """
import os, sys, time
from pflnas.rundir import lock_run_dir
lock = lock_run_dir(sys.argv[1])
child = os.fork()
if child == 0:  # like a data-loader worker: outlives a SIGKILLed parent for a while
    time.sleep(300)
    os._exit(0)
print(child, flush=True)
time.sleep(300)
"""


def test_a_forked_child_of_a_killed_holder_does_not_keep_the_lock(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", FORKING_HOLDER, str(out)], stdout=subprocess.PIPE, text=True
    )
    child = int(holder.stdout.readline())
    try:
        with pytest.raises(ConfigError, match=f"in use by pid {holder.pid}"):
            lock_run_dir(out)
        holder.kill()
        holder.wait()
        os.kill(child, 0)  # the child still runs ...
        with lock_run_dir(out):  # ... and the folder is free
            pass
    finally:
        os.kill(child, 9)


DYING_HOLDER = """
import json, os, sys, time
from pflnas.rundir import LOCK, lock_run_dir
lock = lock_run_dir(sys.argv[1])
note = json.loads(open(os.path.join(sys.argv[1], LOCK)).read())
with open(os.path.join(sys.argv[1], LOCK), "w") as fh:  # as if its holder had died and a straggler held on
    fh.write(json.dumps({**note, "pid": int(sys.argv[2])}))
print("ready", flush=True)
time.sleep(1.0)
"""


def test_a_holder_that_is_gone_is_waited_for_not_refused(tmp_path):
    """A SIGKILLed run keeps its files open while the kernel tears it down: a resume right after the kill
    waits for that moment instead of refusing (the lock file names a process that no longer exists)."""
    out = tmp_path / "run"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    holder = subprocess.Popen(
        [sys.executable, "-c", DYING_HOLDER, str(out), str(gone.pid)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "ready"
    with lock_run_dir(out):  # once the straggler lets go
        assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()
    holder.wait()


def test_the_lock_is_reentrant_in_a_process_and_refuses_library_callers_elsewhere(tmp_path):
    out = tmp_path / "run"
    with lock_run_dir(out), hold(out, "search"):  # a command's claim, then the run's own hold
        assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()
    holder = _holder(out)
    try:
        with pytest.raises(ConfigError, match=f"in use by pid {holder.pid}"):
            hold(out, "search")  # e.g. a SearchRun started from a notebook
    finally:
        holder.kill()
        holder.wait()
    with hold(out, "search"):
        pass


def test_a_failed_claim_removes_the_folder_it_created_and_nothing_else(fx, tmp_path, capsys):
    (tmp_path / "old").mkdir()
    out = tmp_path / "old" / "new" / "run"
    assert REACHED in _one_line(capsys, _argv("search", out, fx))
    assert not (tmp_path / "old" / "new").exists() and (tmp_path / "old").is_dir()
    kept = _run_dir(tmp_path / "kept", "search")
    assert REACHED in _one_line(capsys, _argv("search", kept, fx))
    assert kept.is_dir() and (kept / "config.yaml").is_file()
    mine = tmp_path / "mine"  # empty, made by the user: kept, and left as it was
    mine.mkdir()
    assert REACHED in _one_line(capsys, _argv("search", mine, fx))
    assert mine.is_dir() and not any(mine.iterdir())


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_two_real_searches_on_one_out_and_a_sigkilled_holder(fx, tmp_path):
    """The real thing: a ``pflnas search`` holds its --out; a second one is refused with one line naming it
    and writes nothing; once the first is SIGKILLed, ``--resume`` takes the folder over."""
    out = tmp_path / "run"
    env = {**os.environ, "PFLNAS_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    cli = [sys.executable, "-m", "pflnas"]
    argv = ["search", "--space", "nb201", "--epochs", "500", "--data-dir", str(fx["data"]), "--set",
            "space.init_channels=2", "--set", "data.batch_size=2", "--out", str(out)]  # fmt: skip
    first = subprocess.Popen(
        [*cli, *argv, "--seed", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_for(lambda: (out / "config.yaml").is_file(), first)  # it holds the lock and writes the run
        config = (out / "config.yaml").read_text()
        second = subprocess.run(
            [*cli, *argv, "--seed", "2", "--overwrite"], env=env, capture_output=True, text=True
        )
        assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert f"is in use by pid {first.pid} " in second.stderr and "search --space nb201" in second.stderr
        assert (out / "config.yaml").read_text() == config  # seed 1's, untouched
    finally:
        first.kill()
        first.wait()
    with lock_run_dir(out, "--resume") as lock:  # free at once after SIGKILL
        assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()
        lock.release()


# --- checkpoints are opened only if they are regular files ----
@pytest.mark.parametrize("what", ["fifo", "directory", "symlink_loop", "device"])
def test_a_checkpoint_that_is_not_a_regular_file_is_named(tmp_path, what):
    path = tmp_path / "checkpoint.pt"
    if what == "fifo":
        os.mkfifo(path)
    elif what == "directory":
        path.mkdir()
    elif what == "symlink_loop":
        (tmp_path / "other").symlink_to(path)
        path.symlink_to(tmp_path / "other")
    else:
        path.symlink_to("/dev/zero")
    words = {"fifo": "FIFO", "directory": "directory", "symlink_loop": "symlink loop", "device": "device"}
    with pytest.raises(PflnasError, match=words[what]):
        load_checkpoint(path)


def test_a_damaged_checkpoint_says_what_to_do(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(PflnasError, match="last.pt cannot be read .* restore it from a copy, or delete it"):
        load_checkpoint(tmp_path / "last.pt")


# --- logs and records inside a study -----------------------------------------------------------------------
def test_a_log_is_never_written_through_a_symlink_or_into_a_fifo(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "log.txt").symlink_to(victim)
    os.mkfifo(tmp_path / "fifo.txt")
    for name, words in (("log.txt", "is a symlink"), ("fifo.txt", "is a FIFO")):
        for truncate in (False, True):
            with pytest.raises(PflnasError, match=words):
                open_log(tmp_path / name, truncate=truncate)
    assert victim.read_text() == "precious"
    with open_log(tmp_path / "new.txt") as fh:
        fh.write("a\n")
    with open_log(tmp_path / "new.txt") as fh:
        fh.write("b\n")
    assert (tmp_path / "new.txt").read_text() == "a\nb\n"


def test_a_fifo_for_a_study_run_record_is_one_line_not_a_hang(fx, tmp_path, capsys, monkeypatch):
    monkeypatch.undo()  # the real study planner
    from pflnas.study import load_study

    out = tmp_path / "study"
    run = out / "runs" / "nb201-darts-default-s0"
    run.mkdir(parents=True)
    os.mkfifo(run / "run.json")  # a reader would wait for a writer forever
    (out / "study.yaml").write_text(yaml.safe_dump(load_study(fx["study"]).to_dict()))
    assert "holds another run" in _one_line(
        capsys, ["study", str(fx["study"]), "--out", str(out), "--dry-run"]
    )
