"""``retrain_loaders``: the one data entry point of ``pflnas retrain``.

CIFAR-10 and Fashion-MNIST are held whole in memory (on the GPU when training there) and batched by
:class:`BatchLoader`; ImageNet is read from an ImageFolder tree by worker processes (:mod:`imagenet`).
"""

from __future__ import annotations

import os

import torch

from pflnas.data.imagenet import imagenet_loaders
from pflnas.data.load import load_dataset
from pflnas.data.loader import BatchLoader
from pflnas.data.retrain_types import RetrainData
from pflnas.data.specs import DATASETS
from pflnas.errors import ConfigError, DataError

RETRAIN_DATASETS = (*DATASETS, "imagenet")
"""Data sets ``retrain_loaders`` accepts."""


def retrain_loaders(
    dataset: str,
    data_dir: str | os.PathLike[str] | None,
    *,
    batch_size: int,
    eval_batch_size: int,
    device: torch.device | str,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    subset: int | None = None,
    cutout: int = 0,
    channels_last: bool = False,
    image_size: int | None = None,
    workers: int = 8,
    randaugment: str | None = None,
    reprob: float = 0.0,
) -> RetrainData:
    """Training and evaluation loaders for retraining on ``dataset`` (one of :data:`RETRAIN_DATASETS`).

    ``batch_size`` is per process (the global batch is ``world_size * batch_size``). Training uses the
    official training split (its first ``subset`` images of a permutation seeded by ``seed``, when given),
    shuffled, augmented and without the last partial batch; evaluation uses the whole official test split
    (ImageNet: ``val/``), each rank a disjoint part, so the loop must all-reduce its sums (see
    :class:`RetrainData`). In-memory data sets use DARTS' augmentation (4-pixel padded crop, flip, and
    ``cutout`` when > 0), keep their native ``image_size`` and ignore ``workers``; ``randaugment`` and
    ``reprob`` are ImageNet's (timm) and ``cutout`` is not. ImageNet needs ``data_dir`` or
    ``$PFLNAS_DATA`` and defaults to ``image_size`` 224. Unknown data sets and settings that do not apply
    raise :class:`ConfigError`; missing or broken data :class:`DataError`.
    """
    if dataset not in RETRAIN_DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of: {', '.join(RETRAIN_DATASETS)}")
    if dataset == "imagenet":
        if cutout:
            raise ConfigError("cutout applies to cifar10 and fashion-mnist; for imagenet use reprob")
        location = data_dir or os.environ.get("PFLNAS_DATA")
        if not location:
            raise DataError("imagenet needs --data-dir or PFLNAS_DATA: a folder holding train/ and val/")
        return imagenet_loaders(
            location,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            image_size=image_size or 224,
            workers=workers,
            randaugment=randaugment,
            reprob=reprob,
            rank=rank,
            world_size=world_size,
            seed=seed,
            subset=subset,
            device=device,
            channels_last=channels_last,
        )
    if randaugment is not None or reprob:
        raise ConfigError(f"randaugment and reprob apply to imagenet only; for {dataset} use cutout")
    native = DATASETS[dataset].image_size
    if image_size is not None and image_size != native:
        raise ConfigError(f"{dataset} images are {native}x{native}; image size {image_size} is not supported")
    return _in_memory(
        dataset,
        data_dir,
        batch_size,
        eval_batch_size,
        torch.device(device),
        seed,
        rank,
        world_size,
        subset,
        cutout,
        channels_last,
    )


def _in_memory(
    dataset: str,
    data_dir: str | os.PathLike[str] | None,
    batch_size: int,
    eval_batch_size: int,
    device: torch.device,
    seed: int,
    rank: int,
    world_size: int,
    subset: int | None,
    cutout: int,
    channels_last: bool,
) -> RetrainData:
    data = load_dataset(dataset, data_dir)
    n = len(data.train_y)
    indices = None
    if subset is not None:
        if not 1 <= subset <= n:
            raise ConfigError(f"data subset must be between 1 and {n} (the training images), got {subset}")
        indices = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:subset]
    arrays = (data.train_x, data.train_y, data.test_x, data.test_y)
    if device.type == "cuda":
        # the uint8 set lives on the GPU (184 MB for CIFAR-10): batches are gathered and augmented there
        arrays = tuple(t.to(device) for t in arrays)
    train_x, train_y, test_x, test_y = arrays
    common = dict(
        mean=data.mean, std=data.std, seed=seed, device=device, channels_last=channels_last, rank=rank
    )
    train = BatchLoader(
        train_x,
        train_y,
        indices,
        batch_size,
        augment=True,
        shuffle=True,
        drop_last=True,
        cutout=cutout,
        world_size=world_size,
        **common,
    )
    evaluate = BatchLoader(
        test_x,
        test_y,
        None,
        eval_batch_size,
        augment=False,
        shuffle=False,
        drop_last=False,
        world_size=world_size,
        even_shards=False,
        **common,
    )
    return RetrainData(
        train=train,
        eval=evaluate,
        num_classes=data.num_classes,
        in_channels=data.image_shape[0],
        image_size=data.image_shape[1],
        train_size=n if subset is None else subset,
        eval_size=len(test_y),
        source=data.source,
    )
