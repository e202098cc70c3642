"""The retraining's running sums (kept on the device, read once per log window) and its top-1/top-5
evaluation, which ``pflnas evaluate`` also uses to score a checkpoint: shared by the loop and the CLI, so
apart from both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pflnas.train.distributed import DistInfo, all_reduce_sum


@dataclass
class Sums:
    """Running sums kept on the device (no host sync per step)."""

    loss: Tensor
    top1: Tensor
    top5: Tensor
    count: Tensor

    @classmethod
    def zeros(cls, device: torch.device, values: dict[str, float] | None = None) -> Sums:
        """Zeros, or the running sums a mid-epoch checkpoint saved (``values``, from :meth:`to_dict`)."""
        v = values or {}
        keys = ("loss", "top1", "top5", "count")
        return cls(*(torch.tensor(v.get(k, 0.0), dtype=torch.float64, device=device) for k in keys))

    def to_dict(self) -> dict[str, float]:
        return {k: getattr(self, k).item() for k in ("loss", "top1", "top5", "count")}

    def absorb(self, other: Sums) -> None:
        """Add ``other``'s sums (the micro-batches of an optimizer step that was applied)."""
        for k in ("loss", "top1", "top5", "count"):
            getattr(self, k).add_(getattr(other, k))
            getattr(other, k).zero_()

    def add(self, loss: Tensor, logits: Tensor, target: Tensor) -> None:
        n = target.shape[0]
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(target.unsqueeze(1))
        self.loss += loss.detach().double() * n
        self.top1 += hit[:, 0].sum()
        self.top5 += hit.any(dim=1).sum()
        self.count += n

    def reduce(self, info: DistInfo) -> dict[str, float]:
        packed = all_reduce_sum(torch.stack([self.loss, self.top1, self.top5, self.count]), info)
        n = max(packed[3].item(), 1.0)
        return {
            "loss": packed[0].item() / n,
            "top1": packed[1].item() / n,
            "top5": packed[2].item() / n,
            "count": int(packed[3].item()),
        }


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, info: DistInfo, dtype: torch.dtype | None) -> dict[str, float]:
    """Top-1/top-5 and loss over the eval split; each rank evaluates its shard, sums are all-reduced."""
    was_training = model.training
    model.eval()
    sums = Sums.zeros(info.device)
    for x, y in loader:
        with torch.autocast(info.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)
        logits = logits.float()
        sums.add(F.cross_entropy(logits, y), logits, y)
    model.train(was_training)
    return sums.reduce(info)
