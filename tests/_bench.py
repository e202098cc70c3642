"""Shared by the NAS-Bench-201 tests: whether the table is installed, and a CLI runner."""

from __future__ import annotations

import importlib.metadata

import pytest

from pflnas.bench import nb201
from pflnas.cli.main import main

try:
    importlib.metadata.distribution(nb201.DISTRIBUTION)
    HAVE_TABLE = True
except importlib.metadata.PackageNotFoundError:
    HAVE_TABLE = False
needs_table = pytest.mark.skipif(
    not HAVE_TABLE, reason="analog-nasbench is not installed (extra 'bench': pip install 'pflnas[bench]')"
)


def bench(tmp_path, capsys, *args):
    """``pflnas bench nb201 --out tmp_path/bench ARGS``: (exit code, stdout, stderr)."""
    rc = main(["bench", "nb201", "--out", str(tmp_path / "bench"), *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err
