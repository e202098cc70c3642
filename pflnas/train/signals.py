"""Graceful stop on SIGINT / SIGTERM: the loop finishes its step, saves a checkpoint it can resume exactly
from, prints how to resume and exits with the conventional code (130 for SIGINT, 143 for SIGTERM).

The handler only sets a flag; the loop polls it between steps (a Python attribute, no device sync). Under
torchrun every rank must stop at the same step, so there the ranks agree by a one-integer all-reduce every
:data:`DIST_POLL_EVERY` steps (torchrun forwards the signal to every worker, so all of them stop within that
many steps). A second signal while the checkpoint is being saved stops at once; the atomic write leaves the
previous checkpoint in place.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import torch
from torch import Tensor

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DIST_POLL_EVERY = 10  # torchrun: steps between the all-reduces that make every rank stop at the same step


class RunInterrupted(KeyboardInterrupt):
    """SIGINT: the run saved a checkpoint and stopped (the CLI exits with 130)."""

    exit_code = 130


class RunTerminated(SystemExit):
    """SIGTERM: the run saved a checkpoint and stopped; exits with 143 unless caught."""

    exit_code = 143

    def __init__(self) -> None:
        super().__init__(self.exit_code)


def interruption(signum: int) -> BaseException:
    """The exception a stopped run raises: KeyboardInterrupt-like for SIGINT, SystemExit(143) for SIGTERM."""
    return RunInterrupted() if signum == signal.SIGINT else RunTerminated()


def stop_after_saving(command: str, signum: int, where: str, run_dir: object, announce: bool) -> None:
    """The checkpoint is saved: say (``announce``: on rank 0) how to resume, and raise the signal's
    exception."""
    if announce:
        name = signal.Signals(signum).name if signum else "a signal"
        print(
            f"pflnas {command}: stopped by {name} at {where}; checkpoint saved; "
            f"resume with: pflnas {command} --resume {run_dir}",
            file=sys.stderr,
            flush=True,
        )
    raise interruption(signum)


class StopSignals:
    """Context manager: while inside, SIGINT and SIGTERM request a stop instead of killing the process.

    ``requested(step)`` is polled by the loop after each step; with ``reduce`` (torchrun: an in-place sum
    over ranks) it is collective and reads the flags every :data:`DIST_POLL_EVERY` steps. Outside the main
    thread (where Python cannot install handlers) it never requests a stop.
    """

    def __init__(self, reduce: Callable[[Tensor], Tensor] | None = None, device: Any = "cpu"):
        self.reduce, self.device = reduce, device
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # asked twice: stop now (an atomic write in progress is rolled back)
            raise interruption(signum)
        self.signum = signum

    def requested(self, step: int = 0, force: bool = False) -> bool:
        """True once a stop was asked for (on any rank, under torchrun). ``step`` paces the collective
        poll; ``force`` polls now (every rank must call it at the same point)."""
        if self.reduce is None:
            return self.signum is not None
        if not force and (step + 1) % DIST_POLL_EVERY:
            return False
        mine = [int(self.signum is not None), int(self.signum == signal.SIGTERM)]
        asked, terms = self.reduce(torch.tensor(mine, dtype=torch.int64, device=self.device)).tolist()
        if asked:  # every rank stops alike: with SIGTERM if any rank got one
            self.signum = signal.SIGTERM if terms else signal.SIGINT
        return bool(asked)
