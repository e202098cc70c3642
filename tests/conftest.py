"""Shared fixtures: a CIFAR-10 source for end-to-end tests and an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _data_fixtures import make_archive, make_tree


@pytest.fixture(scope="session")
def cifar_source(tmp_path_factory) -> str:
    """The real CIFAR-10 archive when ``PFLNAS_DATA`` points at it (the Makefile sets it from
    ../shared/data), else a small fake CIFAR-shaped archive, so these tests always run."""
    real = os.environ.get("PFLNAS_DATA")
    if real and Path(real).exists():
        return real
    root = tmp_path_factory.mktemp("fake-cifar")
    make_tree(root / "tree", n_train=12, n_test=2)
    return str(make_archive(root / "tree", root / "cifar10-fake.tar.gz"))


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> str:
    """One decode cache for the whole session (decoding CIFAR-10 once takes ~25 s on 2 cores)."""
    return os.environ.get("PFLNAS_CACHE") or str(tmp_path_factory.mktemp("pflnas-cache"))
