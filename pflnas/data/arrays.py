"""A whole image classification data set held in memory as uint8 tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class ImageArrays:
    """Train and test images of one data set, fully in memory.

    Invariants: ``train_x`` / ``test_x`` are contiguous ``uint8`` tensors of shape N×C×H×W (pixel values
    0..255, not normalized); ``train_y`` / ``test_y`` are ``int64`` labels in ``[0, len(classes))`` with
    one label per image; ``mean`` / ``std`` (one value per channel, for pixels scaled to [0, 1]) are the
    data set's normalization constants; ``source`` is the absolute path the data was read from.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        _, c, h, w = self.train_x.shape
        return (c, h, w)
