"""What the retraining loop gets from the data layer: two epoch-aware loaders and the data's shape."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch


class EpochLoader(Protocol):
    """An iterable of ``(x, y)`` batches whose order (and augmentation) is chosen by ``set_epoch``.

    ``x`` is float32 normalized N×C×H×W on the loader's device (channels_last if asked), ``y`` int64 on
    the same device. ``len()`` is this process's number of batches per pass.
    """

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


@dataclass(frozen=True)
class RetrainData:
    """Training and evaluation data for retraining a found architecture.

    ``train`` shuffles, augments and drops the last partial batch; every rank yields the same number of
    batches. ``eval`` is ordered, unaugmented and sharded *without* padding: each rank sees a disjoint part
    of the evaluation set (ranks may differ by one batch), so the loop must all-reduce its sums (loss,
    correct, count) before dividing; together the ranks see every evaluation image exactly once.
    ``train_size`` / ``eval_size`` count images over all ranks (``train_size`` after ``subset``).
    ``source`` is where the data was read from.
    """

    train: EpochLoader
    eval: EpochLoader
    num_classes: int
    in_channels: int
    image_size: int
    train_size: int
    eval_size: int
    source: str
