"""Shared fixtures: a CIFAR-10 source for end-to-end tests and an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from _data_fixtures import make_archive, make_tree


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests (restored afterwards): tiny networks run faster, and on a
    busy machine it avoids OpenMP spin-waits that made a 16x16 forward take seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cifar_source(tmp_path_factory) -> str:
    """The real CIFAR-10 archive when ``PFLNAS_DATA`` points at it (the Makefile sets it from
    ../shared/data), else a small fake CIFAR-shaped archive, so these tests always run."""
    real = os.environ.get("PFLNAS_DATA")
    if real and Path(real).exists():
        return real
    root = tmp_path_factory.mktemp("fake-cifar")
    make_tree(root / "tree", n_train=26, n_test=2)
    return str(make_archive(root / "tree", root / "cifar10-fake.tar.gz"))


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> str:
    """One decode cache for the whole session (decoding CIFAR-10 once takes ~25 s on 2 cores)."""
    return os.environ.get("PFLNAS_CACHE") or str(tmp_path_factory.mktemp("pflnas-cache"))


@pytest.fixture(scope="session")
def learnable_source(tmp_path_factory) -> str:
    """The real CIFAR-10 archive when available, else a small synthetic archive whose classes are learnable
    (each class a different mean colour), so 'beats chance' tests mean something either way."""
    real = os.environ.get("PFLNAS_DATA")
    if real and Path(real).exists():
        return real
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("learnable") / "tree"
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("test", 20)):
        for label in range(10):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            colour = np.array([(label * 25) % 256, (label * 67) % 256, (label * 131) % 256])
            for i in range(n):
                pixels = np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return str(make_archive(root, root.parent / "learnable.tar.gz"))
