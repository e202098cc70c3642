"""ImageNet (or any ImageFolder tree) for retraining: decoded and augmented by worker processes.

The tree is ``train/<class>/<image>`` and ``val/<class>/<image>`` (``test/`` when there is no ``val/``),
with the same class folders in both. Transforms are timm's: RandomResizedCrop + flip (+ colour jitter,
RandAugment, random erasing) for training; resize to ``image_size / 0.875`` and centre crop for
evaluation; ImageNet's mean and std.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset
from torchvision.datasets import ImageFolder

from pflnas.data.decode import is_image_file
from pflnas.data.loader import shard_positions
from pflnas.data.retrain_types import RetrainData
from pflnas.errors import ConfigError, DataError
from pflnas.utils_io import check_regular_file

EVAL_SPLITS = ("val", "test")


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of ``0..n-1`` in order: disjoint, unpadded shards, so the
    ranks together evaluate every image exactly once."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.indices = shard_positions(n, rank, world_size, drop_last=False, even=False).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class DeviceLoader:
    """A ``DataLoader`` whose batches arrive on ``device`` (channels_last if asked); ``set_epoch`` reaches
    its sampler, as with ``DistributedSampler``."""

    def __init__(self, loader: DataLoader, device: torch.device | str, channels_last: bool = False) -> None:
        self.loader = loader
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch
        set_sampler_epoch = getattr(self.loader.sampler, "set_epoch", None)
        if set_sampler_epoch is not None:
            set_sampler_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            # non_blocking overlaps the copy with compute when the loader pinned the batch
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


def imagenet_loaders(
    data_dir: str | os.PathLike[str],
    *,
    batch_size: int,
    eval_batch_size: int,
    image_size: int = 224,
    workers: int = 8,
    randaugment: str | None = None,
    reprob: float = 0.0,
    color_jitter: float | None = 0.4,
    interpolation: str = "bilinear",
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    subset: int | None = None,
    pin_memory: bool = True,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
) -> RetrainData:
    """Training and evaluation loaders over the ImageFolder tree at ``data_dir``.

    Training samples with ``DistributedSampler(shuffle=True, seed=seed)`` (also for one process, so the
    order depends only on ``(seed, epoch)`` and the ranks' shards together are the one-process order),
    drops the last partial batch and keeps its ``workers`` alive between epochs. ``randaugment`` is a timm
    auto-augment string such as ``"rand-m9-mstd0.5-inc1"`` (timm then turns colour jitter off);
    ``reprob`` is the random-erasing probability (per-pixel noise, timm's training default). ``subset``
    keeps the first N of a permutation of the training images seeded by ``seed``. Evaluation is sharded
    without padding (see :class:`RetrainData`). Batches are pinned (when ``pin_memory`` and ``device`` is
    CUDA) and moved to ``device`` with ``non_blocking``. Problems with the tree raise :class:`DataError`,
    bad arguments :class:`ConfigError`, each in one line.
    """
    _check_arguments(batch_size, eval_batch_size, image_size, workers, reprob, rank, world_size, seed)
    root = Path(data_dir).expanduser().absolute()
    train_dir, eval_dir = _split_dirs(root)
    train_tf, eval_tf = _transforms(image_size, randaugment, reprob, color_jitter, interpolation)
    train_set = _image_folder(train_dir, train_tf)
    eval_set = _image_folder(eval_dir, eval_tf)
    if train_set.classes != eval_set.classes:
        raise DataError(_class_difference(train_set.classes, eval_set.classes, eval_dir.name))
    train_part: Dataset = train_set
    train_size = len(train_set)
    if subset is not None:
        if not 1 <= subset <= train_size:
            raise ConfigError(
                f"data subset must be between 1 and {train_size} (the training images), got {subset}"
            )
        order = torch.randperm(train_size, generator=torch.Generator().manual_seed(seed))
        train_part, train_size = Subset(train_set, order[:subset].tolist()), subset
    train_sampler = DistributedSampler(
        train_part, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False
    )
    pin = pin_memory and torch.device(device).type == "cuda"
    common = dict(num_workers=workers, pin_memory=pin, persistent_workers=workers > 0)
    train = DataLoader(
        train_part,
        batch_size=batch_size,
        sampler=train_sampler,
        drop_last=True,
        # seeds the workers' augmentation RNGs; one stream per rank
        generator=torch.Generator().manual_seed(seed * world_size + rank),
        **common,
    )
    evaluate = DataLoader(
        eval_set, batch_size=eval_batch_size, sampler=ShardSampler(len(eval_set), rank, world_size), **common
    )
    return RetrainData(
        train=DeviceLoader(train, device, channels_last),
        eval=DeviceLoader(evaluate, device, channels_last),
        num_classes=len(train_set.classes),
        in_channels=3,
        image_size=image_size,
        train_size=train_size,
        eval_size=len(eval_set),
        source=str(root),
    )


def _check_arguments(
    batch_size: int,
    eval_batch_size: int,
    image_size: int,
    workers: int,
    reprob: float,
    rank: int,
    world_size: int,
    seed: int,
) -> None:
    if batch_size < 1 or eval_batch_size < 1:
        raise ConfigError(f"batch sizes must be >= 1, got {batch_size} and {eval_batch_size}")
    if image_size < 8:
        raise ConfigError(f"image size must be >= 8, got {image_size}")
    if workers < 0 or seed < 0:
        raise ConfigError(f"workers and seed must be >= 0, got workers={workers}, seed={seed}")
    if not 0.0 <= reprob <= 1.0:
        raise ConfigError(f"random erasing probability must be in [0, 1], got {reprob}")
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank must be in 0..world_size-1, got rank={rank}, world_size={world_size}")


def _split_dirs(root: Path) -> tuple[Path, Path]:
    hint = "expected train/<class>/<image> and val/<class>/<image>"
    if not root.is_dir():
        raise DataError(f"ImageNet folder {root} does not exist; {hint}")
    if not (root / "train").is_dir():
        raise DataError(f"{root} has no train/ folder; {hint}")
    for name in EVAL_SPLITS:
        if (root / name).is_dir():
            return root / "train", root / name
    raise DataError(f"{root} has no val/ (or test/) folder; {hint}")


def _transforms(
    image_size: int, randaugment: str | None, reprob: float, color_jitter: float | None, interpolation: str
) -> tuple[Callable, Callable]:
    from timm.data import create_transform  # here: importing timm costs seconds, only ImageNet needs it

    try:
        train = create_transform(
            image_size,
            is_training=True,
            auto_augment=randaugment,
            re_prob=reprob,
            re_mode="pixel",
            color_jitter=color_jitter,  # timm accepts None: no jitter
            interpolation=interpolation,
        )
        evaluate = create_transform(image_size, is_training=False, interpolation=interpolation)
    except (AssertionError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"bad augmentation settings (randaugment={randaugment!r}, interpolation={interpolation!r}): "
            f"{exc or type(exc).__name__}"
        ) from None
    return train, evaluate


def _image_folder(folder: Path, transform: Callable) -> ImageFolder:
    try:
        return ImageFolder(str(folder), transform=transform, is_valid_file=_regular_image)
    except FileNotFoundError as exc:
        reason = " ".join(str(exc).split())  # one line
        raise DataError(f"cannot use {folder}: {reason}") from None


def _regular_image(path: str) -> bool:
    """An image file name that is a regular file: a FIFO named ``x.jpg`` would block a loader worker
    forever, so it (or a device, or a symlink loop) is refused in one line while the tree is listed."""
    if not is_image_file(os.path.basename(path)):
        return False
    check_regular_file(path, "image", DataError)
    return True


def _class_difference(train: list[str], other: list[str], other_name: str) -> str:
    only_train = sorted(set(train) - set(other))
    only_other = sorted(set(other) - set(train))
    return (
        f"class folders differ between train/ and {other_name}/: only in train: {only_train}, "
        f"only in {other_name}: {only_other}"
    )
