"""Reading an ImageFolder tree (``train/<class>/*``, ``test/<class>/*``) from a tar archive or a folder.

Class order is the sorted folder names (torchvision's ImageFolder convention); within a class, files are
taken in sorted name order, so the result does not depend on the order of the archive's members.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from pathlib import Path

import torch

from pflnas.data.arrays import ImageArrays
from pflnas.data.decode import decode_image_bytes, is_image_file
from pflnas.data.specs import DatasetSpec
from pflnas.errors import DataError
from pflnas.utils_io import read_regular_bytes

SPLITS = ("train", "test")
LAYOUT_HINT = "expected train/<class>/<image> and test/<class>/<image>"


def is_tree_folder(path: Path) -> bool:
    """Whether ``path`` holds ``train/`` and ``test/`` folders."""
    return all((path / split).is_dir() for split in SPLITS)


def read_imagefolder_archive(path: Path, spec: DatasetSpec) -> ImageArrays:
    """Decode every image of a (possibly compressed) tar archive, streaming it once.

    The tree may sit at the archive's root or under one top-level folder.
    """
    tree = _Tree(spec, path)
    try:
        with tarfile.open(path, "r|*") as archive:
            for member in archive:
                parts = tuple(p for p in member.name.split("/") if p not in ("", "."))
                if member.isdir():
                    tree.add_folder(parts)
                elif member.isfile() and is_image_file(parts[-1]):
                    handle = archive.extractfile(member)
                    assert handle is not None  # regular files always have contents
                    tree.add_image(parts, handle.read(), f"{path}:{member.name}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"cannot read archive {path} ({exc}); re-download or replace it") from None
    return tree.finish()


def read_imagefolder_folder(path: Path, spec: DatasetSpec) -> ImageArrays:
    """Decode every image under ``path/train`` and ``path/test``."""
    tree = _Tree(spec, path)
    for split in SPLITS:
        for dirpath, dirnames, filenames in os.walk(path / split):
            dirnames.sort()
            rel = Path(dirpath).relative_to(path).parts
            tree.add_folder(rel)
            for name in sorted(filenames):
                if is_image_file(name):
                    file = Path(dirpath) / name
                    data = read_regular_bytes(file, "image", DataError)  # a FIFO would block a plain read
                    tree.add_image((*rel, name), data, str(file))
    return tree.finish()


class _Tree:
    """Collects decoded images by (split, class) while a tree is walked, then validates and stacks them."""

    def __init__(self, spec: DatasetSpec, source: Path) -> None:
        self.spec = spec
        self.source = source
        self.images: dict[str, list[tuple[str, str, torch.Tensor]]] = {s: [] for s in SPLITS}
        self.folders: dict[str, set[str]] = {s: set() for s in SPLITS}
        self.tops: set[str] = set()

    def add_folder(self, parts: tuple[str, ...]) -> None:
        located = _locate(parts)
        if located is not None and len(located[2]) == 1:
            top, split, rest = located
            self.folders[split].add(rest[0])

    def add_image(self, parts: tuple[str, ...], data: bytes, where: str) -> None:
        located = _locate(parts)
        if located is None or len(located[2]) < 2:
            return  # not under train/<class>/ or test/<class>/: not part of the tree
        top, split, rest = located
        self.tops.add(top)
        self.folders[split].add(rest[0])
        self.images[split].append((rest[0], "/".join(rest[1:]), decode_image_bytes(data, self.spec, where)))

    def finish(self) -> ImageArrays:
        spec, src = self.spec, self.source
        if len(self.tops) > 1:
            tops = ", ".join(sorted(t or "<root>" for t in self.tops))
            raise DataError(f"{src} holds several train/test trees ({tops}); keep one")
        for split in SPLITS:
            if not self.folders[split]:
                raise DataError(f"{src} has no {split}/<class>/ images; {LAYOUT_HINT}")
        train, test = self.folders["train"], self.folders["test"]
        if train != test:
            raise DataError(
                f"{src}: class folders differ between train/ and test/ (only in train: "
                f"{sorted(train - test)}, only in test: {sorted(test - train)}); make them match"
            )
        if len(train) != spec.num_classes:
            raise DataError(
                f"{src} has {len(train)} class folders but {spec.name} has {spec.num_classes}; "
                f"point --data-dir/PFLNAS_DATA at {spec.name} data"
            )
        classes = tuple(sorted(train))
        for split in SPLITS:
            empty = sorted(set(classes) - {c for c, _, _ in self.images[split]})
            if empty:
                raise DataError(
                    f"{src}: class folder {split}/{empty[0]} has no images; add images or remove it"
                )
        index = {c: i for i, c in enumerate(classes)}
        (train_x, train_y), (test_x, test_y) = (self._stack(split, index) for split in SPLITS)
        return ImageArrays(
            spec.name, train_x, train_y, test_x, test_y, classes, spec.mean, spec.std, str(src)
        )

    def _stack(self, split: str, index: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
        items = sorted(self.images[split], key=lambda item: (item[0], item[1]))
        x = torch.stack([image for _, _, image in items]).contiguous()
        y = torch.tensor([index[c] for c, _, _ in items], dtype=torch.int64)
        return x, y


def _locate(parts: tuple[str, ...]) -> tuple[str, str, tuple[str, ...]] | None:
    """Split a path into (top-level folder or "", split, rest) when it lies under a train/ or test/ folder."""
    if parts and parts[0] in SPLITS:
        return "", parts[0], parts[1:]
    if len(parts) > 1 and parts[1] in SPLITS:
        return parts[0], parts[1], parts[2:]
    return None
