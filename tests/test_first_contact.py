"""First contact: what a new user meets. A search needs a named space; `pflnas list` names what exists; file
system and memory errors are one line; runs say what they do before each slow step and show a bar with an
ETA on a terminal; a failed search leaves no empty folder behind."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from _tiny_runs import retrain_argv, search_argv, tiny_archive
from test_models import DARTS_V2 as GENOTYPE

from pflnas.cli.cmd_list import SUBJECTS
from pflnas.cli.main import main
from pflnas.config.presets import list_presets
from pflnas.ops import get_op, list_ops
from pflnas.spaces import list_spaces
from pflnas.strategies import MULTI_TRIAL_STRATEGIES, list_strategies
from pflnas.train.recipe import list_recipes


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory) -> str:
    return tiny_archive(tmp_path_factory.mktemp("tiny"))


# --- a search needs a space --------------------------------------------------------------------------------
@pytest.mark.parametrize("flags", [[], ["--epochs", "3"], ["--strategy", "gdas", "--seed", "2"]])
def test_search_without_a_space_lists_the_spaces_and_an_example(tmp_path, capsys, monkeypatch, flags):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "search", *flags)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert all(name in err for name in list_spaces())
    assert "e.g. pflnas search --space cell_v1" in err
    assert list(tmp_path.iterdir()) == []  # no runs/ folder, nothing started


def test_a_space_named_by_set_or_config_counts(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("space: {name: bogus_space}\n")
    for flags in (["--set", "space.name=bogus_space"], ["--config", config]):
        code, _, err = run_cli(capsys, "search", "--out", tmp_path / "o", *flags)
        assert code == 2 and "unknown search space 'bogus_space'" in err  # checked, not refused as unnamed


# --- pflnas list --------------------------------------------------------------------------------------------
def test_list_names_every_registry_entry_once_per_line(capsys):
    expected = {
        "spaces": list_spaces(),
        "ops": list_ops(),
        "strategies": [*list_strategies(), *MULTI_TRIAL_STRATEGIES],
        "recipes": list_recipes(),
        "presets": list_presets(),
    }
    assert set(expected) == set(SUBJECTS)
    for subject, names in expected.items():
        code, out, err = run_cli(capsys, "list", subject)
        lines = out.splitlines()
        assert code == 0 and err == "" and len(lines) == len(names)
        assert sorted(line.split()[0] for line in lines) == sorted(names)
        assert all(len(line.split()) > 2 for line in lines)  # a description beside each name
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and all(f"{subject}:" in out.splitlines() for subject in SUBJECTS)


def test_list_ops_says_where_an_op_is_parameter_free(capsys):
    lines = {line.split()[0]: line for line in run_cli(capsys, "list", "ops")[1].splitlines()}
    assert "parameter-free at stride 1 only" in lines["skip_connect"]  # a FactorizedReduce at stride 2
    assert "parameter-free [cell, bottleneck, token]" in lines["max_pool_3x3"]
    assert "trainable [cell, bottleneck]" in lines["conv_3x3"]
    for name in list_ops():
        contexts = ", ".join(get_op(name).contexts())
        assert f"[{contexts}" in lines[name]


def test_list_of_an_unknown_subject_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["list", "models"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


# --- file system and memory errors: one line ---------------------------------------------------------------
@pytest.mark.parametrize(
    "code, hint",
    [
        (errno.EACCES, "permissions"),
        (errno.ENOSPC, "free some space"),
        (errno.EROFS, "read-only"),
        (errno.ENOTDIR, "not a folder"),
        (errno.EIO, "check the path"),
    ],
)
def test_os_errors_are_one_line_naming_the_path(tmp_path, capsys, monkeypatch, code, hint):
    target = tmp_path / "found.json"

    def failing_save(arch, path):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr("pflnas.cli.cmd_arch.save_architecture", failing_save)
    exit_code, out, err = run_cli(capsys, "arch", "from-darts", GENOTYPE, "--out", target)
    assert exit_code == 2 and out == ""
    assert err.startswith("pflnas arch: error: ") and len(err.splitlines()) == 1
    assert str(target) in err and os.strerror(code) in err and hint in err
    with pytest.raises(OSError):  # --debug keeps the traceback
        main(["--debug", "arch", "from-darts", GENOTYPE, "--out", str(target)])


def test_an_os_error_without_a_path_and_memory_errors_are_one_line(capsys, monkeypatch):
    for exc in (OSError(errno.ENOSPC, "No space left on device"), MemoryError()):

        def failing(*args, exc=exc):
            raise exc

        monkeypatch.setattr("pflnas.cli.cmd_arch.architecture_from_genotype", failing)
        code, out, err = run_cli(capsys, "arch", "from-darts", GENOTYPE)
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
        assert ("No space left" in err) if isinstance(exc, OSError) else ("out of memory" in err)


def test_a_real_unwritable_path_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "arch", "from-darts", GENOTYPE, "--out", blocker / "found.json")
    assert code == 2 and len(err.splitlines()) == 1 and str(blocker) in err


# --- progress -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["search", "retrain"])
def test_runs_say_what_they_load_and_build_only_on_a_terminal(
    tmp_path, capsys, monkeypatch, tiny_source, command
):
    monkeypatch.setenv("PFLNAS_CACHE", str(tmp_path / "cache"))  # a first load: the data is decoded
    argv = search_argv if command == "search" else retrain_argv
    monkeypatch.setattr("pflnas.train.progress.on_a_terminal", lambda: True)
    code, _, err = run_cli(capsys, *argv(tiny_source, tmp_path / "on", 1, "run.progress=true"))
    lines = [line for line in err.splitlines() if line.startswith("pflnas: ")]
    assert code == 0, err
    said = [next(i for i, line in enumerate(lines) if line.startswith(start)) for start in STARTS]
    assert said == sorted(said), lines  # in the order the steps run
    code, _, err = run_cli(capsys, *argv(tiny_source, tmp_path / "off", 1))  # run.progress=false
    assert code == 0 and "pflnas: " not in err
    monkeypatch.undo()  # stderr is a pipe here: a log gets no progress lines, only a failure's one line
    code, _, err = run_cli(capsys, *argv(tiny_source, tmp_path / "pipe", 1, "run.progress=true"))
    assert code == 0 and "pflnas: " not in err


STARTS = ("pflnas: loading cifar10", "pflnas: decoding", "pflnas: building the")


def _on_a_terminal(argv: list[str], cwd: Path) -> str:
    """Run ``python -m pflnas ARGV`` with stderr on a pseudo-terminal; what the terminal showed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 columns
    proc = subprocess.Popen(
        [sys.executable, "-m", "pflnas", *argv], cwd=cwd, stdout=subprocess.DEVNULL, stderr=follower
    )
    os.close(follower)
    shown = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        try:
            chunk = os.read(leader, 4096) if ready else b""
        except OSError:  # the child closed the terminal
            chunk = b""
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert proc.wait(60) == 0, shown.decode(errors="replace")
    return shown.decode(errors="replace")


@pytest.mark.parametrize("command", ["search", "retrain"])
def test_a_terminal_shows_a_bar_with_an_eta_within_each_epoch(tmp_path, tiny_source, command):
    argv = search_argv if command == "search" else retrain_argv
    shown = _on_a_terminal(argv(tiny_source, tmp_path / "run", 1, "run.progress=true"), tmp_path)
    assert STARTS[0] in shown and STARTS[2] in shown  # the start-up lines, then the bars
    assert "epoch 1/1" in shown
    assert "<" in shown and ("it/s" in shown or "s/it" in shown)  # tqdm's [elapsed<remaining, rate]


def test_the_study_runner_shows_a_bar_of_runs_on_a_terminal(tmp_path, monkeypatch, capsys):
    from pflnas.study.config import StudyRun
    from pflnas.study.runner import PlannedRun, _execute

    class Terminal:  # stderr as tqdm sees a terminal
        text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    runs = [StudyRun(f"r{i}", "cell_v1", "darts", "default", i, {}) for i in range(2)]
    todo = [PlannedRun(r, tmp_path / r.run_id, "start", [sys.executable, "-c", "pass"]) for r in runs]
    done, failed = _execute(todo, 1, print)
    assert len(failed) == 2  # no found.json: 'failed', yet counted by the bar
    assert "study" in terminal.text and "2/2" in terminal.text
    terminal.text = ""
    _execute(todo, 1, print, progress=False)
    assert terminal.text == ""


# --- a failed search leaves nothing behind ------------------------------------------------------------------
TOO_WIDE = "space.init_channels=200000"  # fails once the data is loaded, before anything is written


def test_a_failed_search_removes_the_run_folder_it_created(tmp_path, capsys, tiny_source):
    out = tmp_path / "runs" / "new"
    code, _, err = run_cli(capsys, *search_argv(tiny_source, out, 1, TOO_WIDE))
    assert code == 2 and "does not fit in memory" in err
    assert not out.exists()


def test_a_failed_search_keeps_a_folder_the_user_made(tmp_path, capsys, tiny_source):
    out = tmp_path / "mine"
    out.mkdir()
    code, _, _ = run_cli(capsys, *search_argv(tiny_source, out, 1, TOO_WIDE))
    assert code == 2 and out.is_dir()


def test_a_huge_value_in_an_error_stays_one_short_line(tmp_path, capsys):
    """A config value of 300 KB is quoted in the error, but the line keeps its head and its advice only."""
    config = tmp_path / "long.yaml"
    config.write_text(f'run:\n  epochs: "{"x" * 300_000}"\n')
    assert main(["search", "--space", "cell_v1", "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 1000 and "characters left out" in err
    assert err.startswith("pflnas search: error:") and "run.epochs" in err
