"""Reading (and downloading) data sets in torchvision's own on-disk formats."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from pflnas.data.arrays import ImageArrays
from pflnas.data.specs import DatasetSpec
from pflnas.errors import DataError

TorchvisionFactory = Callable[..., datasets.VisionDataset]
_FACTORIES: dict[str, TorchvisionFactory] = {
    "cifar10": datasets.CIFAR10,
    "fashion-mnist": datasets.FashionMNIST,
}


def has_torchvision_layout(root: Path, spec: DatasetSpec) -> bool:
    """Whether ``root`` holds torchvision's folder for ``spec`` (e.g. ``cifar-10-batches-py/``)."""
    return (root / spec.torchvision_folder).is_dir()


def read_torchvision(root: Path, spec: DatasetSpec) -> ImageArrays:
    """Read both splits from torchvision's format under ``root`` (never downloads)."""
    try:
        train, test = (_FACTORIES[spec.name](str(root), train=flag, download=False) for flag in (True, False))
    except (RuntimeError, OSError, ValueError) as exc:
        raise DataError(
            f"cannot read {spec.name} in torchvision format under {root} ({exc}); delete "
            f"{root / spec.torchvision_folder} and re-download it"
        ) from None
    train_x, train_y = _tensors(train)
    test_x, test_y = _tensors(test)
    classes = tuple(train.classes)  # type: ignore[attr-defined]
    if len(classes) != spec.num_classes:
        raise DataError(f"{root}: {spec.name} has {len(classes)} classes, expected {spec.num_classes}")
    return ImageArrays(spec.name, train_x, train_y, test_x, test_y, classes, spec.mean, spec.std, str(root))


def download_torchvision(root: Path, spec: DatasetSpec) -> None:
    """Download ``spec`` into ``root`` with torchvision; any failure raises :class:`DataError`."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        for flag in (True, False):
            _FACTORIES[spec.name](str(root), train=flag, download=True)
    except Exception as exc:  # network, HTTP, checksum, disk: all mean "no data here"
        raise DataError(f"the download failed: {short_reason(exc)}") from None


def short_reason(exc: BaseException) -> str:
    """The innermost reason of a (possibly nested) download error in a few words: urllib wraps the socket
    error, which names every URL it tried; the user needs "no network", not the URLs."""
    reason = getattr(exc, "reason", None)
    while isinstance(reason, BaseException):
        exc, reason = reason, getattr(reason, "reason", None)
    text = str(getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def extract_torchvision_archive(archive: Path, dest: Path, spec: DatasetSpec) -> Path:
    """Extract torchvision's archive (``cifar-10-python.tar.gz``) into ``dest`` once; returns ``dest``."""
    if has_torchvision_layout(dest, spec):
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            # the "data" filter refuses absolute paths and links out of dest (Python >= 3.10.12)
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, **safe)
        tmp.rename(dest)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot extract {archive} into {tmp} ({exc}); re-download or replace it") from None
    return dest


def _tensors(ds: datasets.VisionDataset) -> tuple[torch.Tensor, torch.Tensor]:
    data = ds.data  # type: ignore[attr-defined]
    x = torch.as_tensor(np.asarray(data))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # N×H×W (gray) or N×H×W×C → N×C×H×W
    y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)  # type: ignore[attr-defined]
    return x.contiguous(), y
