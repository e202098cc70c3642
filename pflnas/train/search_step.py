"""One step of the search loop: an architecture step on a held-out batch, then a weight step on a training
batch. The loop (:class:`pflnas.train.search.SearchRun`), the CUDA-graph replay
(:mod:`pflnas.train.graph_step`) and ``benchmarks/search_step.py`` all run this one body.

The body never reads a tensor value on the host (no ``.item()``, no branching on data), so on a GPU it
queues its kernels without waiting and it can be captured in a CUDA graph. It returns device tensors; the
loop accumulates them and reads them once per epoch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pflnas.strategies import StepContext, Strategy
from pflnas.supernet import Supernet

Batch = Sequence[Tensor]  # (images, labels)


@dataclass
class SearchStep:
    """The step body. ``forward`` is the (possibly compiled) supernet forward; ``autocast`` returns the
    loop's autocast context; ``reduce_grads`` averages weight gradients over processes (torchrun)."""

    model: Supernet
    strategy: Strategy
    optimizer: torch.optim.Optimizer
    weights: list[nn.Parameter]
    grad_clip: float
    forward: Callable[[Tensor], Tensor] | None = None
    autocast: Callable[[], Any] = contextlib.nullcontext
    reduce_grads: Callable[[Sequence[Tensor]], None] = field(default=lambda params: None)
    # ``check(loss)`` after the gradients, before clipping (which would smear one NaN over all of them):
    # the loop's NaN/Inf guard, which may raise to drop the batch; None where the body is captured in a
    # CUDA graph (the loop checks the outputs)
    check: Callable[[Tensor], None] | None = None

    def __post_init__(self) -> None:
        if self.forward is None:
            self.forward = self.model

    def loss(self, batch: Batch) -> Tensor:
        """Cross-entropy of the supernet on ``batch`` under the loop's autocast (fp32 loss)."""
        assert self.forward is not None
        x, y = batch
        with self.autocast():
            logits = self.forward(x)
        return F.cross_entropy(logits.float(), y)

    def __call__(
        self, train_batch: Batch, arch_batch: Batch, arch_ctx: StepContext, search_arch: bool
    ) -> dict[str, Tensor]:
        """One step; returns ``loss`` and ``correct`` of the weight step (and ``arch_loss`` when the
        architecture stepped) as device tensors."""
        assert self.forward is not None
        logs = self.strategy.arch_step(train_batch, arch_batch, arch_ctx) if search_arch else {}
        x, y = train_batch
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.forward(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        self.reduce_grads(self.weights)  # torchrun: one all-reduce, before clipping
        if self.check is not None:
            self.check(loss)
        grad_norm = nn.utils.clip_grad_norm_(self.weights, self.grad_clip)
        self.optimizer.step()
        for a in self.model.arch_parameters():  # the weight step must not leave gradients on alphas
            a.grad = None
        out = {
            "loss": loss.detach(),
            "correct": (logits.detach().argmax(1) == y).sum(),
            "grad_norm": grad_norm.detach(),  # before clipping
        }
        if "arch_loss" in logs:
            out["arch_loss"] = logs["arch_loss"].detach()
        return out
