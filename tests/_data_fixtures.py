"""Builders of tiny fake data sets on disk for tests/test_data.py."""

from __future__ import annotations

import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = tuple(f"class{i}" for i in range(10))


def make_tree(
    root: Path,
    *,
    classes: tuple[str, ...] = CLASSES,
    test_classes: tuple[str, ...] | None = None,
    n_train: int = 3,
    n_test: int = 2,
    size: int = 32,
    mode: str = "RGB",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write ``root/train/<class>/<i>.png`` and ``root/test/<class>/<i>.png`` of random pixels (PNG, so
    lossless). Returns the expected arrays: ``{split}_x`` N×C×H×W uint8 and ``{split}_y`` in sorted-class
    label order."""
    rng = np.random.default_rng(seed)
    expected: dict[str, np.ndarray] = {}
    for split, names, n in (("train", classes, n_train), ("test", test_classes or classes, n_test)):
        xs, ys = [], []
        for label, name in enumerate(sorted(names)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                shape = (size, size, 3) if mode == "RGB" else (size, size)
                pixels = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(pixels, mode=mode).save(folder / f"{i:04d}.png")
                xs.append(pixels.transpose(2, 0, 1) if mode == "RGB" else pixels[None])
                ys.append(label)
        expected[f"{split}_x"] = np.stack(xs) if xs else np.zeros((0,))
        expected[f"{split}_y"] = np.array(ys, dtype=np.int64)
    return expected


def make_archive(tree: Path, archive: Path, *, top: str | None = None) -> Path:
    """Pack ``tree/train`` and ``tree/test`` into a .tar.gz, at its root or under folder ``top``."""
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            if (tree / split).exists():
                tar.add(tree / split, arcname=f"{top}/{split}" if top else split)
    return archive


def make_fashion_mnist_raw(root: Path, n_train: int = 20, n_test: int = 10) -> None:
    """Write torchvision's uncompressed Fashion-MNIST idx files under ``root/FashionMNIST/raw``."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">iiii", 2051, n, 28, 28) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, n) + labels.tobytes())
