"""DARTS (Liu et al., ICLR 2019): softmax relaxation, alphas trained by Adam on held-out batches.

First order (``darts``): grad of the validation loss w.r.t. alpha at the current weights.
Second order (``darts2``): the unrolled gradient, with the Hessian-vector product by finite differences::

    w' = w - xi * update(grad_w L_train(w, a))          # the loop's virtual step (momentum, wd)
    g  = grad_a L_val(w', a) - xi * (grad_a L_train(w+, a) - grad_a L_train(w-, a)) / (2 eps)
    w+- = w +- eps * grad_w' L_val(w', a),   eps = 0.01 / ||grad_w' L_val(w', a)||
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pflnas.config.search import ArchOptimConfig
from pflnas.strategies.base import ArchGrads, Batch, StepContext, Strategy
from pflnas.supernet.network import Supernet, softmax_mixing


class DARTS(Strategy):
    name = "darts"
    layouts = ("per_edge", "per_source", "batched")  # dense softmax mixing: every layout
    seed_groups = True

    def __init__(self, arch_optim: ArchOptimConfig, unrolled: bool = False):
        super().__init__(arch_optim)
        self.unrolled = unrolled
        self.optimizer: torch.optim.Optimizer | None = None

    def attach(self, supernet: Supernet) -> None:
        self.supernet = supernet
        supernet.set_mixing(softmax_mixing)
        cfg = self.arch_optim
        self.optimizer = torch.optim.Adam(
            supernet.arch_parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )

    def arch_grads(self, train_batch: Batch, val_batch: Batch, ctx: StepContext) -> ArchGrads:
        assert self.supernet is not None and self.optimizer is not None, "attach() first"
        if self.unrolled:
            loss, grads = self._unrolled_grads(train_batch, val_batch, ctx)
        else:
            loss = ctx.objective(val_batch)
            grads = list(torch.autograd.grad(loss.sum(), self.supernet.arch_parameters()))
        return ArchGrads(loss, grads)

    def _unrolled_grads(
        self, train_batch: Batch, val_batch: Batch, ctx: StepContext
    ) -> tuple[Tensor, list[Tensor]]:
        assert self.supernet is not None
        if ctx.virtual_step is None:
            raise RuntimeError("second-order DARTS needs the loop's virtual_step")
        weights = self.supernet.weight_parameters()
        alphas = self.supernet.arch_parameters()
        backup = [w.detach().clone() for w in weights]
        try:
            # w' = w - xi * update(grad_w L_train)
            train_grads = torch.autograd.grad(ctx.loss(train_batch).sum(), weights, allow_unused=True)
            train_grads = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, train_grads)]
            train_grads = ctx.average(train_grads)  # distributed: the global batch's gradient, one w'
            with torch.no_grad():
                for w, delta in zip(weights, ctx.virtual_step(weights, train_grads)):
                    w.sub_(delta)
            val_loss = ctx.objective(val_batch)
            grads = torch.autograd.grad(val_loss.sum(), alphas + weights, allow_unused=True)
            d_alpha = [torch.zeros_like(a) if g is None else g for a, g in zip(alphas, grads[: len(alphas)])]
            d_w = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads[len(alphas) :])]
            d_w = ctx.average(d_w)  # distributed: one eps and one w+-; d_alpha is averaged with the result
            # Finite-difference Hessian-vector product around the original weights; eps per seed (a
            # grouped supernet's seeds each take the step size of their own search)
            net = self.supernet
            eps = 0.01 / net.seed_norms(d_w).clamp_min(1e-12)
            hessian = []
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    for w, w0, g in zip(weights, backup, d_w):
                        w.copy_(w0).add_(g * (sign * net.per_seed(eps, w)))  # on the device: no host sync
                hessian.append(torch.autograd.grad(ctx.loss(train_batch).sum(), alphas, allow_unused=True))
            xi = ctx.lr
            final = []
            for da, gp, gn, a in zip(d_alpha, hessian[0], hessian[1], alphas):
                gp = torch.zeros_like(a) if gp is None else gp
                gn = torch.zeros_like(a) if gn is None else gn
                final.append(da - xi * (gp - gn) / (2 * net.per_seed(eps, a)))
            return val_loss, final
        finally:
            with torch.no_grad():
                for w, w0 in zip(weights, backup):
                    w.copy_(w0)

    def state_dict(self) -> dict[str, Any]:
        assert self.optimizer is not None, "attach() first"
        return {"optimizer": self.optimizer.state_dict(), "unrolled": self.unrolled}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.optimizer is not None, "attach() first"
        self.optimizer.load_state_dict(state["optimizer"])


def darts(arch_optim: ArchOptimConfig) -> Strategy:
    return DARTS(arch_optim, unrolled=False)


def darts2(arch_optim: ArchOptimConfig) -> Strategy:
    return DARTS(arch_optim, unrolled=True)
