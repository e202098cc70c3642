"""The search's data: loaders over the search split (weight half, held-out half, evaluation slice) and the
evaluation on the held-out half. The supernet search and the multi-trial evaluator train and score on
exactly these, so they live apart from either loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pflnas.config.search import SearchConfig
from pflnas.data import BatchLoader, load_dataset, search_split
from pflnas.device import at_least_fp32
from pflnas.errors import DataError
from pflnas.train.dist_search import SearchSync
from pflnas.train.distributed import DistInfo


@dataclasses.dataclass
class SearchLoaders:
    """The weight half, the architecture (held-out) half and the evaluation slice of the search split."""

    train: BatchLoader
    arch: BatchLoader
    evaluate: BatchLoader
    num_classes: int
    in_channels: int
    image_size: int
    source: str


def make_loaders(cfg: SearchConfig, device: torch.device, info: DistInfo | None = None) -> SearchLoaders:
    """The search's loaders; under torchrun each rank takes its slice of the same global batches (the
    per-rank batch is ``data.batch_size / world_size``) and its disjoint slice of the held-out split."""
    d = cfg.data
    rank, world = (info.rank, info.world_size) if info is not None else (0, 1)
    batch_size = d.batch_size // world  # divisible: checked by check_global_batch
    data = load_dataset(d.dataset, d.data_dir)
    train_idx, arch_idx = search_split(len(data.train_y), d.train_portion, d.subset, cfg.run.seed)
    eval_idx = arch_idx if d.eval_limit is None else arch_idx[: d.eval_limit]
    common = dict(mean=data.mean, std=data.std, device=device, channels_last=cfg.run.channels_last)
    seed = cfg.run.seed
    # On a GPU the whole uint8 training set (184 MB for CIFAR-10) lives on the device: batches are gathered
    # and augmented there, with no per-step host-to-device copy.
    images, labels = data.train_x, data.train_y
    if device.type == "cuda":
        images, labels = images.to(device), labels.to(device)

    def shuffled(indices: Any, stream: int) -> BatchLoader:
        """An augmented, shuffled, full-batch loader; weights and α draw separate streams."""
        return BatchLoader(
            images,
            labels,
            indices,
            batch_size,
            augment=True,
            shuffle=True,
            drop_last=True,
            seed=seed * 2 + stream,
            rank=rank,
            world_size=world,
            **common,
        )

    return SearchLoaders(
        train=shuffled(train_idx, 1),
        arch=shuffled(arch_idx, 2),
        evaluate=BatchLoader(
            images,
            labels,
            eval_idx,
            d.eval_batch_size,
            augment=False,
            shuffle=False,
            drop_last=False,
            seed=seed,
            rank=rank,
            world_size=world,
            even_shards=False,  # every held-out image once; the sums are all-reduced
            **common,
        ),
        num_classes=len(data.classes),
        in_channels=int(data.train_x.shape[1]),
        image_size=int(data.train_x.shape[-1]),
        source=data.source,
    )


def check_batches(cfg: SearchConfig, loaders: SearchLoaders) -> None:
    """A search whose weight or architecture half gives no full batch would train nothing and "succeed"."""
    halves = {"weight": loaders.train, "architecture": loaders.arch}
    for name, loader in halves.items():
        if len(loader) == 0:
            raise DataError(
                f"the {name} half of the search data ({len(loader.indices)} images) gives no full "
                f"batch of data.batch_size={cfg.data.batch_size}; lower data.batch_size or use more data "
                "(data.subset, data.train_portion)"
            )


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: BatchLoader, autocast: Any, sync: SearchSync | None = None
) -> tuple[float, float]:
    """Mean loss and accuracy; with ``sync``, over the shards of every rank (sums all-reduced)."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=next(model.parameters()).device)
    correct = torch.zeros_like(loss_sum)
    count = 0
    for x, y in loader:
        with autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(at_least_fp32(logits), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        count += len(y)
    model.train()
    if sync is not None and sync.distributed:
        totals = sync.sum_(torch.stack([loss_sum, correct, loss_sum.new_tensor(count)]))
        loss_sum, correct, count = totals[0], totals[1], int(totals[2].item())
    return (loss_sum / max(count, 1)).item(), (correct / max(count, 1)).item()


@torch.no_grad()
def evaluate_seeds(model: nn.Module, loaders: list[BatchLoader], autocast: Any) -> list[tuple[float, float]]:
    """:func:`evaluate` for a grouped supernet of ``len(loaders)`` seeds: seed s's loss and accuracy on
    its own loader (the seeds' evaluation slices have the same size, so their batches line up)."""
    model.eval()
    n = len(loaders)
    device = next(model.parameters()).device
    loss_sum = torch.zeros(n, dtype=torch.float64, device=device)
    correct = torch.zeros_like(loss_sum)
    count = 0
    for batches in zip(*loaders):
        x, y = torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])
        with autocast():
            logits = model(x)
        per_image = F.cross_entropy(at_least_fp32(logits.flatten(0, 1)), y.flatten(), reduction="none")
        loss_sum += per_image.view(y.shape).sum(-1)
        correct += (logits.argmax(-1) == y).sum(-1)
        count += y.shape[-1]
    model.train()
    return [
        (loss / max(count, 1), hits / max(count, 1))
        for loss, hits in zip(loss_sum.tolist(), correct.tolist())
    ]
