"""Safe file I/O: atomic writes (temp file beside the target, fsync, rename) and reads that open only
regular files, so a FIFO, a device or a symlink loop at a path gives one clear line instead of a hang."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from pflnas.errors import PflnasError


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path`` and rename it into place.

    A crash at any moment leaves either the old file or the new one, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; a written file gets the usual umask-based mode
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # the rename itself survives a power loss too
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in words ("a FIFO (named pipe)", "a directory", ...)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_regular_file(path: str | Path, what: str, error: type[PflnasError] = PflnasError) -> Path:
    """Raise ``error`` with one line unless ``path`` is (or links to) a regular file.

    Reading a FIFO blocks forever and a device never ends, so every record, checkpoint or data file is
    checked before it is opened; the message names what the path really is.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise error(f"{what} {path}{_stat_problem(path, exc)}") from None
    if not stat.S_ISREG(mode):
        raise error(f"{what} {path} is {file_kind(mode)}, not a regular file; give the path of a file")
    return path


def _stat_problem(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return " is a symlink loop; give the path of a file"
    if exc.errno == errno.ENOENT and os.path.islink(path):
        return f" is a broken symlink (to {os.readlink(path)}); give the path of a file"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return " does not exist (no such file); check the path"
    return f" cannot be read ({exc.strerror or exc}); check the path and its permissions"


def open_regular(path: str | Path, what: str, error: type[PflnasError] = PflnasError) -> IO[bytes]:
    """Open ``path`` for binary reading only if it is a regular file (see :func:`check_regular_file`).

    The type is checked again on the open descriptor (opened non-blocking, so a FIFO swapped in after the
    first check cannot hang the open), which closes the window between the check and the open.
    """
    path = check_regular_file(path, what, error)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"{what} {path}{_stat_problem(path, exc)}") from None
    _blocking_if_regular(fd, lambda kind: error(f"{what} {path} is {kind}, not a regular file; give a file"))
    return os.fdopen(fd, "rb")


def _blocking_if_regular(fd: int, refuse: Callable[[str], PflnasError]) -> None:
    """Check what a descriptor opened with O_NONBLOCK really is (the path may have been swapped since it
    was checked): close it and raise ``refuse(kind)`` unless a regular file, else make it blocking again."""
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise refuse(file_kind(mode))
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)


def read_regular_bytes(path: str | Path, what: str, error: type[PflnasError] = PflnasError) -> bytes:
    """The bytes of a regular file, or ``error`` with one line naming what ``path`` is instead."""
    with open_regular(path, what, error) as fh:
        return fh.read()


def read_regular_text(path: str | Path, what: str, error: type[PflnasError] = PflnasError) -> str:
    """The UTF-8 text of a regular file; undecodable bytes are one line too, not a traceback."""
    data = read_regular_bytes(path, what, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start}); give a text file") from None


def open_log(path: str | Path, truncate: bool = False) -> IO[str]:
    """Open a log file of pflnas's own for appending (or from empty) as text, never through a symlink and
    never blocking on a FIFO planted at its name: a log must not write into someone else's file."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | (os.O_TRUNC if truncate else os.O_APPEND), 0o666)
    except OSError as exc:  # ELOOP: a symlink; ENXIO: a FIFO nobody reads
        why = f"cannot be written ({exc.strerror})"
        if exc.errno == errno.ELOOP:
            why = "is a symlink"
        elif exc.errno == errno.ENXIO:
            why = f"is {file_kind(os.lstat(path).st_mode)}, not a file"
        raise PflnasError(f"log {path} {why}; remove it and try again") from None
    _blocking_if_regular(
        fd, lambda kind: PflnasError(f"log {path} is {kind}, not a file; remove it and try again")
    )
    return os.fdopen(fd, "w", encoding="utf-8")
