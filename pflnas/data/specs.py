"""The supported data sets: name → shape, normalization, class names and where their files may be found."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from pflnas.errors import DataError
from pflnas.names import name_hint


@dataclass(frozen=True)
class DatasetSpec:
    """What pflnas knows about one data set.

    ``classes`` are the official class names in label order; an ImageFolder copy takes its class names
    (and so its label order) from its sorted folder names instead. ``archive_names`` are the ImageFolder
    archives looked for inside a data folder; ``torchvision_folder`` / ``torchvision_archive`` name
    torchvision's own layout (relative to a root folder).
    """

    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    archive_names: tuple[str, ...]
    torchvision_folder: str
    torchvision_archive: str | None = None

    @property
    def pil_mode(self) -> str:
        return "RGB" if self.channels == 3 else "L"


_SPECS = (
    DatasetSpec(
        name="cifar10",
        num_classes=10,
        channels=3,
        image_size=32,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        archive_names=("cifar10-jpeg.tar.gz", "cifar10.tar.gz", "cifar10.tgz", "cifar10-jpeg.tgz"),
        torchvision_folder="cifar-10-batches-py",
        torchvision_archive="cifar-10-python.tar.gz",
    ),
    DatasetSpec(
        name="fashion-mnist",
        num_classes=10,
        channels=1,
        image_size=28,
        mean=(0.2860,),
        std=(0.3530,),
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        archive_names=("fashion-mnist-png.tar.gz", "fashion-mnist.tar.gz", "fashion-mnist.tgz"),
        torchvision_folder="FashionMNIST/raw",
    ),
)

DATASETS: MappingProxyType[str, DatasetSpec] = MappingProxyType({s.name: s for s in _SPECS})
"""Supported data sets by name (read-only)."""


def get_dataset_spec(name: str) -> DatasetSpec:
    """The spec for ``name``; an unknown name raises :class:`DataError` listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        hint = name_hint(name, DATASETS)
        raise DataError(f"unknown dataset {name!r}{hint}; choose one of: {', '.join(DATASETS)}") from None
