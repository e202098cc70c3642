"""User-facing errors.

Anything a user can cause (a bad file, a bad flag, missing data) raises :class:`PflnasError`. The CLI
turns it into one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations


class PflnasError(Exception):
    """A problem with the user's input, stated with what to do about it."""


class ArchitectureError(PflnasError):
    """A found.json / architecture record that cannot be used."""


class ConfigError(PflnasError):
    """A config file, override or CLI value that is invalid."""


class DataError(PflnasError):
    """A dataset that cannot be found or read."""
