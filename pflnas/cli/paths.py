"""Checks of output paths given on the command line, made before any work starts."""

from __future__ import annotations

import os
from pathlib import Path

from pflnas.errors import ConfigError


def check_out_file(path: Path, flag: str, *, force: bool = True, example: str = "out") -> None:
    """Raise ConfigError unless ``path`` can be written as a file: not a directory, not under a file, in a
    writable directory, and (unless ``force``) not already there."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; give a file name such as {path / example}")
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    _check_nearest_folder(path, path.parent, flag)


def check_out_folder(path: Path, flag: str) -> None:
    """Raise ConfigError unless ``path`` is, or can be created as, a writable directory."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a directory; choose another path")
    _check_nearest_folder(path, path, flag)


def _check_nearest_folder(path: Path, start: Path, flag: str) -> None:
    """The nearest existing folder at or above ``start`` (the one ``path`` would be created into) must be
    a writable directory."""
    for folder in (start, *start.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"{flag} {path}: {folder} is a file, not a directory; choose another path")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise ConfigError(f"{flag} {path}: cannot write into {folder}; choose another path")
            return
