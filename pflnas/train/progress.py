"""Start-up progress: one line on stderr before each slow step of a run, so that it never sits silent.

Decoding a data set the first time and building a supernet take seconds to tens of seconds before the first
progress bar appears. :func:`startup_lines` gives the run a ``say(line)`` that prints above any tqdm bar
on stderr, and shows the data layer's own notes meanwhile (``pflnas.data`` INFO records, e.g. "decoding
... once"). Like tqdm's bars (``disable=None``) the lines appear only when stderr is a terminal: a log or a
pipe gets nothing but a failed run's one error line. With ``enabled`` false (``run.progress=false``, or a
rank other than 0) nothing is printed either.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator

from tqdm import tqdm

Say = Callable[[str], None]


def on_a_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def quiet(line: str) -> None:
    """Say nothing (progress off, or a rank other than 0)."""


def say_on_stderr(line: str) -> None:
    """``pflnas: line`` on stderr, written so that a running tqdm bar is redrawn below it."""
    tqdm.write(f"pflnas: {line}", file=sys.stderr)


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        say_on_stderr(self.format(record))


@contextlib.contextmanager
def startup_lines(enabled: bool, logger: str = "pflnas.data") -> Iterator[Say]:
    """``say`` for the slow steps of a run's start, with ``logger``'s INFO records shown meanwhile."""
    if not (enabled and on_a_terminal()):
        yield quiet
        return
    log = logging.getLogger(logger)
    handler, level = _TqdmHandler(logging.INFO), log.level
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield say_on_stderr
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
