"""One step of the search loop: an architecture step on a held-out batch, then a weight step on a training
batch. The loop (:class:`pflnas.train.search.SearchRun`), the CUDA-graph replay
(:mod:`pflnas.train.graph_step`) and ``benchmarks/search_step.py`` all run this one body.

Both halves read the same way: gradients, the all-reduce (torchrun), the NaN/Inf check, then the optimizer;
the strategy only computes the α gradients and applies them when told, so a dropped batch is a return value,
not an exception. The body reads no tensor on the host (no ``.item()``, no branching on data) unless a
check asks to, so on a GPU it queues its kernels without waiting and can be captured in a CUDA graph.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pflnas.device import at_least_fp32
from pflnas.strategies import ArchGrads, StepContext, Strategy, set_grads
from pflnas.supernet import Supernet

Batch = Sequence[Tensor]  # (images, labels)


def seed_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy in fp32 (or wider): 0-d for ``[B, classes]`` logits; for a grouped supernet's
    ``[N, B, classes]`` one mean per seed, ``[N]`` (each seed's loss is its own; gradients are of the sum)."""
    if logits.dim() == 2:
        return F.cross_entropy(at_least_fp32(logits), labels)
    per_image = F.cross_entropy(at_least_fp32(logits.flatten(0, 1)), labels.flatten(), reduction="none")
    return per_image.view(labels.shape).mean(-1)


def sgd_virtual_step(
    optimizer: torch.optim.SGD,
) -> Callable[[Sequence[Tensor], Sequence[Tensor]], list[Tensor]]:
    """The update SGD (momentum, weight decay) would subtract for ``grads``, without changing its state:
    second-order DARTS' virtual step (:attr:`pflnas.strategies.StepContext.virtual_step`)."""

    def step(params: Sequence[Tensor], grads: Sequence[Tensor]) -> list[Tensor]:
        group = optimizer.param_groups[0]
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        out = []
        for p, g in zip(params, grads):
            d = g + wd * p.detach()
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                d = d + momentum * buf
            out.append(lr * d)
        return out

    return step


@dataclass
class SearchStep:
    """The step body. ``forward`` is the (possibly compiled) supernet forward; ``autocast`` returns the
    loop's autocast context; ``reduce_grads`` averages gradients over processes in place (torchrun).

    ``check_arch(arch)`` and ``check_weights(loss)`` run after each half's gradients are reduced, before its
    optimizer steps (and before clipping, which would smear one NaN over all gradients): the loop's NaN/Inf
    guard, returning False to drop the batch. None where the body is captured in a CUDA graph (the loop
    checks the outputs instead)."""

    model: Supernet
    strategy: Strategy
    optimizer: torch.optim.Optimizer
    weights: list[nn.Parameter]
    grad_clip: float
    forward: Callable[[Tensor], Tensor] | None = None
    autocast: Callable[[], Any] = contextlib.nullcontext
    reduce_grads: Callable[[Sequence[Tensor]], None] = field(default=lambda params: None)
    check_arch: Callable[[ArchGrads], bool] | None = None
    check_weights: Callable[[Tensor], bool] | None = None

    def __post_init__(self) -> None:
        if self.forward is None:
            self.forward = self.model

    def loss(self, batch: Batch) -> Tensor:
        """Cross-entropy of the supernet on ``batch`` under the loop's autocast (fp32 loss), per seed
        (:func:`seed_cross_entropy`)."""
        assert self.forward is not None
        x, y = batch
        with self.autocast():
            logits = self.forward(x)
        return seed_cross_entropy(logits, y)

    def __call__(
        self, train_batch: Batch, arch_batch: Batch, arch_ctx: StepContext, search_arch: bool
    ) -> dict[str, Tensor] | None:
        """One step; returns ``loss``, ``correct`` and ``grad_norm`` of the weight step (and ``arch_loss``
        when the architecture stepped) as device tensors, or None when a check dropped the batch (no
        optimizer applied what failed; an architecture step that passed stays applied)."""
        out: dict[str, Tensor] = {}
        arch = self.strategy.arch_grads(train_batch, arch_batch, arch_ctx) if search_arch else None
        if arch is not None:
            alphas = self.model.arch_parameters()
            set_grads(alphas, arch.grads)
            self.reduce_grads(alphas)  # torchrun: every process applies the same update
            if self.check_arch is not None and not self.check_arch(arch):
                return self._drop()
            self.strategy.apply_arch_grads()
            out["arch_loss"] = arch.loss.detach()
        weight_step = self._weight_step(train_batch)
        return None if weight_step is None else {**weight_step, **out}

    def _weight_step(self, train_batch: Batch) -> dict[str, Tensor] | None:
        assert self.forward is not None
        x, y = train_batch
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.forward(x)
        loss = seed_cross_entropy(logits, y)
        # no alpha gradients: this half never uses them (DARTS' code computes and drops them)
        loss.sum().backward(inputs=self.weights)
        self.reduce_grads(self.weights)  # torchrun: one all-reduce, before clipping
        if self.check_weights is not None and not self.check_weights(loss):
            return self._drop()
        grad_norm = self.model.clip_weight_grads(self.grad_clip)  # per seed in a grouped supernet
        self.optimizer.step()
        for a in self.model.arch_parameters():  # the weight step must not leave gradients on alphas
            a.grad = None
        return {
            "loss": loss.detach(),
            "correct": (logits.detach().argmax(-1) == y).sum(-1),
            "grad_norm": grad_norm.detach(),  # before clipping
        }

    def _drop(self) -> None:
        """A dropped batch leaves no gradient behind, on weights or alphas."""
        self.optimizer.zero_grad(set_to_none=True)
        for a in self.model.arch_parameters():
            a.grad = None
        return None
