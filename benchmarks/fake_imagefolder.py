"""Write a synthetic ImageNet-style ImageFolder tree (``train/<class>/*.jpg``, ``val/<class>/*.jpg``) of
smooth random JPEGs, for throughput benchmarks where no ImageNet copy is at hand.
Decoding and augmenting these costs what real photos of the same size cost; accuracy on them means nothing.

    python benchmarks/fake_imagefolder.py OUT [--classes 10] [--train 64] [--val 8] [--size 256]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def write_tree(out: Path, classes: int, n_train: int, n_val: int, size: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in range(classes):
            folder = out / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                # low-frequency noise upsampled: JPEG sizes close to natural photos, unlike white noise
                small = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
                img = Image.fromarray(small).resize((size, size), Image.BILINEAR)
                img.save(folder / f"{i:05d}.jpg", quality=90)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--train", type=int, default=64, help="training images per class")
    p.add_argument("--val", type=int, default=8, help="validation images per class")
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args()
    write_tree(Path(args.out), args.classes, args.train, args.val, args.size)
    print(f"wrote {args.classes * (args.train + args.val)} images under {args.out}")


if __name__ == "__main__":
    main()
