"""Run directories: a marker saying pflnas wrote a folder, and an exclusive lock while a process writes it.

Two processes on one ``--out`` used to mix their metrics, and ``--overwrite`` replaced a user's own files.
The lock is an ``flock`` on ``.pflnas-lock``: the kernel drops it when its holder dies, even by SIGKILL, so a
killed run never leaves its folder stuck; the file only tells the next process who holds it. The marker
``.pflnas-run`` names the kind of run (search, retrain, study, bench, report); pflnas reuses or replaces
only a folder that has it, or (runs from before markers existed) whose files are exactly a run of that kind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from pflnas.errors import ConfigError
from pflnas.utils_io import atomic_write_json, file_kind

MARKER = ".pflnas-run"
LOCK = ".pflnas-lock"
OWN_FILES = frozenset({MARKER, LOCK})
KINDS = ("search", "retrain", "study", "bench", "report")
_CODE = Path(__file__).resolve().parents[1]  # the folder holding the pflnas package (the repository)


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _has_key(path: Path, key: str) -> bool:
    """Whether YAML file ``path`` has top-level ``key:``, read as text (never parsed: it may be hostile)."""
    if not _regular(path):
        return False
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    return any(line.startswith(f"{key}:".encode()) for line in head.splitlines())


# what a run of each kind looked like before markers existed (only files pflnas itself writes)
LEGACY: dict[str, Callable[[Path], bool]] = {
    "search": lambda d: _has_key(d / "config.yaml", "resolved_space") and _regular(d / "metrics.jsonl"),
    "retrain": lambda d: _has_key(d / "config.yaml", "network") and _regular(d / "arch.json"),
    "study": lambda d: (
        _regular(d / "study.yaml")
        and (d / "runs").is_dir()
        or any(_regular(p) for p in d.glob("runs/*/run.json"))
    ),
    "bench": lambda d: (
        any(_regular(d / n) for n in ("summary.json", "zero_cost_quality.json", "op_wins.json"))
        or any(_regular(p) for p in (*d.glob("*/seed*.json"), *d.glob("*/*/seed*.json")))
    ),
    "report": lambda d: _regular(d / "report.md") and _regular(d / "report.html"),
}


def marked_kind(folder: Path) -> str | None:
    """The kind the marker of ``folder`` names (None without a valid one; a symlink is not a marker)."""
    path = Path(folder) / MARKER
    if not _regular(path):
        return None
    try:
        with open(path, "rb") as fh:
            kind = json.loads(fh.read(4096)).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if kind in KINDS else None


def run_kind(folder: str | Path) -> str | None:
    """What kind of pflnas run ``folder`` holds (its marker, else its pre-marker files), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    return marked_kind(folder) or next((k for k, test in LEGACY.items() if test(folder)), None)


def user_entries(folder: Path) -> list[Path]:
    """What ``folder`` holds besides pflnas's own marker and lock file ([] when it does not exist)."""
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.name not in OWN_FILES]


def mark(folder: Path, kind: str) -> None:
    """Write the marker (atomically: a symlink planted at its name is replaced, never followed)."""
    stamp = dt.datetime.now().isoformat(timespec="seconds")
    atomic_write_json(Path(folder) / MARKER, {"kind": kind, "created": stamp})


def check_target(folder: Path, flag: str) -> None:
    """Refuse a folder whose contents are not a run's to give: /, the home folder, the current folder or one
    above it, one holding the pflnas code. No flag makes these acceptable, so none is suggested."""
    real, home = Path(os.path.realpath(folder)), Path(os.path.realpath(Path.home()))
    cwd = Path(os.path.realpath(os.getcwd()))
    why = None
    if real == Path(real.anchor):
        why = "is the root directory"
    elif real == home or real in home.parents:
        why = "is your home directory" if real == home else "contains your home directory"
    elif real == cwd or real in cwd.parents:
        why = "is the current directory" if real == cwd else "contains the current directory"
    elif real == _CODE or real in _CODE.parents:
        why = "contains the pflnas code"
    if why:
        raise ConfigError(f"{flag} {folder} {why}; give a new folder for the run, e.g. runs/NAME")


def check_new(folder: Path, kind: str, *, reuse: bool, flag: str = "--out", again: str = "") -> None:
    """Refuse ``folder`` for a new ``kind`` run unless it is absent, empty, or (with ``reuse``) a ``kind`` run
    pflnas wrote. ``again`` is the flag that would continue the existing run (e.g. ``--resume``)."""
    check_target(folder, flag)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{flag} {folder} exists and is not a directory; choose another path")
    if not user_entries(folder):
        return
    found = run_kind(folder)
    if found is None:
        raise ConfigError(
            f"{flag} {folder} is not empty and is not a pflnas run directory (no {MARKER}); pflnas never "
            "replaces files it did not write: choose a new folder"
        )
    if found != kind:
        raise ConfigError(
            f"{flag} {folder} holds a pflnas {found} run, not a {kind} run; choose a new folder"
        )
    if not reuse:
        cont = f"use {again} {folder} to continue it or " if again else ""
        raise ConfigError(f"{flag} {folder} is not empty; {cont}--overwrite to replace it")


def check_resume(folder: Path, kind: str, what: str, flag: str = "--resume") -> None:
    """Refuse to continue ``folder`` unless it is a ``kind`` run; ``what`` names the files a run has."""
    if run_kind(folder) != kind:
        raise ConfigError(
            f"{flag} {folder} is not a pflnas {kind} run directory (no {MARKER}, and no {what}); give a "
            f"folder that 'pflnas {kind}' wrote"
        )


# --- the lock ---------------------------------------------------------------------------------------------
_HELD: dict[str, list[int]] = {}  # real path -> [lock file descriptor, holders in this process]
EXIT_GRACE_S = 10.0  # how long a dying holder is waited for
_PF_EXITING = 0x4  # Linux task flag (/proc/PID/stat field 9): the process is exiting
_GUARD = threading.Lock()


def _forget_in_child() -> None:
    """A forked child (e.g. a data-loader worker) closes its copies of the lock files: the lock then lives
    exactly as long as the process that took it, not until its orphaned workers notice it died."""
    global _GUARD
    for fd, _ in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()
    _GUARD = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


class RunLock:
    """This process's exclusive hold on a run directory, re-entrant within the process. Use it as a context
    manager or call :meth:`release`; leaving by an exception when nothing but pflnas's own files was written
    there removes them, and the folders this hold created."""

    def __init__(self, folder: Path, key: str, created: list[Path]):
        self.folder, self.key, self.created, self.released = folder, key, created, False  # created: new dirs

    def release(self, cleanup: bool = False) -> None:
        with _GUARD:
            entry = _HELD.get(self.key)
            if self.released or entry is None:
                return
            self.released = True
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _HELD[self.key]
            if cleanup and not user_entries(self.folder):  # nothing but the lock and marker: leave no trace
                for name in OWN_FILES:
                    (self.folder / name).unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # the folder, then the parents this hold made
                    for made in self.created:
                        made.rmdir()
            os.close(entry[0])  # the kernel drops the flock here (or when the process dies)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None):
        self.release(cleanup=kind is not None)


def lock_run_dir(folder: str | Path, flag: str = "--out") -> RunLock:
    """Create ``folder`` if needed and lock it, or raise ConfigError naming the process that holds it."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create {flag} {folder} ({exc.strerror}); choose another directory"
        ) from None
    key = os.path.realpath(folder)
    with _GUARD:
        if key in _HELD:
            _HELD[key][1] += 1
            return RunLock(folder, key, [])
        fd = _open_lock(folder, flag)
        try:
            _acquire(fd, folder, flag)
        except BaseException:
            os.close(fd)
            raise
        _HELD[key] = [fd, 1]
    return RunLock(folder, key, created)


def _open_lock(folder: Path, flag: str) -> int:
    """Open (or create) the lock file without following a symlink or blocking on a FIFO planted there."""
    path = folder / LOCK
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = stat.S_IFREG
    except OSError as exc:
        raise ConfigError(
            f"cannot write to {flag} {folder} ({exc.strerror}); choose another directory"
        ) from None
    if not stat.S_ISREG(mode):
        what = "a symlink" if stat.S_ISLNK(mode) else file_kind(mode)
        raise ConfigError(f"{path} is {what}, not pflnas's lock file; remove it and try again")
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise ConfigError(
            f"cannot write to {flag} {folder} ({exc.strerror}); choose another directory"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped in between the lstat and the open
        os.close(fd)
        raise ConfigError(f"{path} is not a regular file; remove it and try again")
    return fd


def _acquire(fd: int, folder: Path, flag: str) -> None:
    """Take the lock at once, or refuse naming the holder; a holder that is dying (SIGKILLed, still
    tearing down its memory) is waited for up to EXIT_GRACE_S, so a resume right after a kill works."""
    deadline = time.monotonic() + EXIT_GRACE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline or not _holder_exiting(fd):
                raise ConfigError(
                    f"{flag} {folder} is in use by {_holder(fd)}; wait for it to end (or stop it), or choose "
                    "another folder"
                ) from None
            time.sleep(0.05)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            print(
                f"pflnas: warning: {folder} cannot be locked ({exc.strerror}); run one process on it",
                file=sys.stderr,
            )
            return
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv else "",
        "started": dt.datetime.now().isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)


def _holder_exiting(fd: int) -> bool:
    """Whether the process the lock file names (on this host) is gone or exiting: a SIGKILLed process
    keeps its files open while the kernel tears down its memory, for a moment after its parent saw it die."""
    try:
        info = json.loads(os.pread(fd, 4096, 0))
        if info["host"] != socket.gethostname():
            return False
        fields = Path(f"/proc/{int(info['pid'])}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:  # no such process (any more)
        return True
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False
    return fields[0] in ("Z", "X") or bool(int(fields[6]) & _PF_EXITING)


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the lock file (it may not have written it yet)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0))
        command = " ".join(str(info["command"]).split())
        return f"pid {int(info['pid'])} on {info['host']} since {info['started']} ({command})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another pflnas process"


# --- claims: check, lock, check again under the lock, mark --------------------------------------------
def claim_new(folder: str | Path, kind: str, *, reuse: bool, flag: str = "--out", again: str = "") -> RunLock:
    """Lock ``folder`` for a new ``kind`` run (see :func:`check_new`) and mark it. The check runs before the
    lock (nothing is created for a refused folder) and again under it (another process may have written
    there in between)."""
    folder = Path(folder)
    check_new(folder, kind, reuse=reuse, flag=flag, again=again)
    lock = lock_run_dir(folder, flag)
    try:
        check_new(folder, kind, reuse=reuse, flag=flag, again=again)
        mark(folder, kind)
    except BaseException:
        lock.release(cleanup=True)
        raise
    return lock


def claim_resume(folder: str | Path, kind: str, what: str, flag: str = "--resume") -> RunLock:
    """Lock an existing ``kind`` run to continue it (see :func:`check_resume`); a run from before markers
    existed gets one."""
    folder = Path(folder)
    check_resume(folder, kind, what, flag)
    lock = lock_run_dir(folder, flag)
    if marked_kind(folder) is None:
        mark(folder, kind)
    return lock


def hold(folder: str | Path, kind: str) -> RunLock:
    """The lock a run takes itself while it writes (free when the command claimed the folder already), so
    that no library caller either mixes two processes' rows; an empty folder gets the marker."""
    lock = lock_run_dir(folder)
    if marked_kind(lock.folder) is None and not user_entries(lock.folder):
        mark(lock.folder, kind)
    return lock
