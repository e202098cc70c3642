"""GDAS (Dong & Yang, CVPR 2019): differentiable sampling of one path per edge.

Every forward pass (weight and architecture steps alike) draws a hard one-hot Gumbel-softmax sample of
each edge's alphas; only the sampled op runs, and the straight-through gradient of the relaxed sample
reaches the alphas (the other entries enter as zero-valued scalars, as in GDAS' reference code). The
temperature anneals linearly from ``tau_max`` to ``tau_min`` over the search (10 -> 0.1). Alphas are
trained by Adam on held-out batches, first order. In eval mode the argmax path runs, without noise.
The derived architecture is the softmax of the alphas under the space's rule, as for DARTS.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pflnas.config.search import ArchOptimConfig
from pflnas.strategies.base import ArchGrads, Batch, StepContext, Strategy
from pflnas.supernet.network import Supernet

TAU_MAX, TAU_MIN = 10.0, 0.1


class GDAS(Strategy):
    name = "gdas"
    dynamic_path = True

    def __init__(self, arch_optim: ArchOptimConfig, tau_max: float = TAU_MAX, tau_min: float = TAU_MIN):
        super().__init__(arch_optim)
        self.tau_max, self.tau_min = tau_max, tau_min
        self.tau = tau_max
        self.optimizer: torch.optim.Optimizer | None = None

    def attach(self, supernet: Supernet) -> None:
        self.supernet = supernet
        supernet.set_mixing(self._mix, single_path=True)
        cfg = self.arch_optim
        self.optimizer = torch.optim.Adam(
            supernet.arch_parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )

    def _mix(self, alphas: Tensor) -> Tensor:
        assert self.supernet is not None
        if not self.supernet.training:
            return F.one_hot(alphas.argmax(-1), alphas.shape[-1]).to(alphas.dtype)
        while True:  # as GDAS: redraw in the (rare) case the sample overflowed
            sample = F.gumbel_softmax(alphas.float(), tau=self.tau, hard=True, dim=-1)
            if torch.isfinite(sample).all():
                return sample.to(alphas.dtype)

    def temperature(self, epoch: int, epochs: int) -> float:
        """Linear from ``tau_max`` at the first epoch to ``tau_min`` at the last."""
        if epochs <= 1:
            return self.tau_min
        return self.tau_max - (self.tau_max - self.tau_min) * epoch / (epochs - 1)

    def arch_grads(self, train_batch: Batch, val_batch: Batch, ctx: StepContext) -> ArchGrads:
        assert self.supernet is not None and self.optimizer is not None, "attach() first"
        self.tau = self.temperature(ctx.epoch, ctx.epochs)
        loss = ctx.objective(val_batch)
        grads = list(torch.autograd.grad(loss.sum(), self.supernet.arch_parameters()))
        return ArchGrads(loss, grads, {"tau": torch.tensor(self.tau)})

    def state_dict(self) -> dict[str, Any]:
        assert self.optimizer is not None, "attach() first"
        return {"optimizer": self.optimizer.state_dict(), "tau": self.tau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.optimizer is not None, "attach() first"
        self.optimizer.load_state_dict(state["optimizer"])
        self.tau = float(state["tau"])


def gdas(arch_optim: ArchOptimConfig) -> Strategy:
    return GDAS(arch_optim)
