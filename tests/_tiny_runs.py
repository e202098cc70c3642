"""Tiny search and retrain runs for the crash- and numerical-safety tests, and a way to run them as separate
processes that a test can kill.

The data set is 8 synthetic images per class (80 in all); a search step and a retrain step take a few
milliseconds. Killable runs are forked from a ``forkserver`` that imported pflnas (and torch) once, so each
process starts in milliseconds instead of paying the ~10 s import; each is still a separate process that
receives real signals and runs the CLI's ``main`` exactly as ``python -m pflnas`` does.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from pathlib import Path

from _data_fixtures import make_archive, make_tree

ARCH = str(Path(__file__).parent.parent / "experiments" / "archs" / "darts_v2.json")

# cell_v1 at C=4 with 3 cells; 64 images: 32 for weights, 32 for alphas, batch 8: 4 steps per epoch
SEARCH_SETS = [
    "space.init_channels=4",
    "space.layers=3",
    "data.subset=64",
    "data.batch_size=8",
    "data.eval_limit=16",
    "run.progress=false",
    "run.threads=1",
    "run.device=cpu",
]
# DARTS-V2 at C=4 with 3 cells, 48 images, batch 8: 6 steps per epoch
RETRAIN_SETS = [
    "model.init_channels=4",
    "model.layers=3",
    "data.subset=48",
    "data.batch_size=8",
    "run.progress=false",
    "run.tensorboard=false",
    "run.threads=1",
    "run.device=cpu",
]


def tiny_archive(root: Path, n_train: int = 8) -> str:
    """A CIFAR-10-shaped archive of ``n_train`` random 32x32 images per class (2 test images per class)."""
    make_tree(root / "tree", n_train=n_train, n_test=2)
    return str(make_archive(root / "tree", root / "cifar10-tiny.tar.gz"))


def search_argv(source: str, out: Path, epochs: int, *sets: str, space: str = "cell_v1") -> list[str]:
    """A tiny search (:data:`SEARCH_SETS`, then ``sets``, which may override them) of ``space``."""
    argv = ["search", "--space", space, "--data-dir", source, "--out", str(out), "--epochs", str(epochs)]
    for item in (*SEARCH_SETS, *sets):
        argv += ["--set", item]
    return argv


def retrain_argv(source: str, out: Path, epochs: int, *sets: str) -> list[str]:
    argv = ["retrain", "--arch", ARCH, "--recipe", "quick", "--data-dir", source, "--out", str(out)]
    argv += ["--epochs", str(epochs)]
    for item in (*RETRAIN_SETS, *sets):
        argv += ["--set", item]
    return argv


def _cli_child(
    argv: list[str],
    env: dict[str, str],
    log: str,
    kill_in_write: str | None,
    signal_at: tuple[int, int, int] | None,
) -> None:
    """A forked process: the CLI with stdout and stderr to ``log``, exiting with its code. With
    ``kill_in_write=NAME`` the process SIGKILLs itself inside the next atomic write of ``NAME``: after the
    temp file is complete, before it is renamed over ``NAME``. With ``signal_at=(SIG, EPOCH, STEP)`` it sends
    itself SIG when that (0-based) step of the loop begins."""
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if kill_in_write is not None:
        replace = os.replace

        def dying_replace(src, dst, *args, **kwargs):
            if Path(dst).name == kill_in_write:
                os.kill(os.getpid(), signal.SIGKILL)
            return replace(src, dst, *args, **kwargs)

        os.replace = dying_replace  # this process only
    if signal_at is not None:
        from pflnas.train.guard import FiniteGuard

        sig, epoch, step = signal_at
        at = FiniteGuard.at

        def signalling_at(guard, e, s):
            at(guard, e, s)
            if (e, s) == (epoch, step):
                os.kill(os.getpid(), sig)

        FiniteGuard.at = signalling_at  # this process only
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
    from pflnas.cli.main import main

    sys.exit(main(argv))


class Launcher:
    """Starts ``pflnas`` CLI runs as processes forked from a server that imported pflnas once."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(
            ["_tiny_runs", "pflnas.cli.main", "pflnas.train.search", "pflnas.train.retrain"]
        )

    def start(
        self,
        argv: list[str],
        env: dict[str, str],
        log: Path,
        kill_in_write: str | None = None,
        signal_at: tuple[int, int, int] | None = None,
    ) -> mp.process.BaseProcess:
        args = (argv, env, str(log), kill_in_write, signal_at)
        proc = self.ctx.Process(target=_cli_child, args=args)
        proc.start()
        return proc
