"""Named choices and defaults that help texts show before torch is loaded.

The library modules that use them (:mod:`pflnas.models.factory`, :mod:`pflnas.export`,
:mod:`pflnas.measure.context`) import them from here, so ``pflnas profile --help`` and ``pflnas export
--help`` list the same dataset presets, exporters and measurement defaults the code runs with, without
importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class DatasetPreset:
    """The input a derived network is built for: network family, class count and image size."""

    name: str
    family: str
    num_classes: int
    image_size: int
    in_channels: int = 3


DATASET_PRESETS: MappingProxyType[str, DatasetPreset] = MappingProxyType(
    {
        "cifar10": DatasetPreset("cifar10", "cifar", 10, 32),
        "imagenet": DatasetPreset("imagenet", "imagenet", 1000, 224),
        "fashion-mnist": DatasetPreset("fashion-mnist", "cifar", 10, 28, in_channels=1),
    }
)

DEFAULT_OPSET = 18  # the lowest opset torch's dynamo exporter implements; TorchScript goes lower
EXPORTERS = ("auto", "dynamo", "torchscript")

# pflnas.measure.context.SpeedConfig: batch of the throughput run, untimed and timed passes
SPEED_BATCH_SIZE, SPEED_WARMUP, SPEED_REPEATS = 64, 10, 30

# Supernet layouts (``space.layout``): every candidate on every edge as its own module (DARTS), parameter-free
# ops computed once per source node, or trainable ops of one kind on all edges leaving a node as one wider op.
SUPERNET_LAYOUTS = ("per_edge", "per_source", "batched")
