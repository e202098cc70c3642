"""The search step's NaN/Inf checks: what the loop asks the guard (:mod:`pflnas.train.guard`) between each
half's gradients and its optimizer step, and after the step. They return verdicts; the step body decides
what a dropped batch means, so no exception travels through the strategy or the step.
"""

from __future__ import annotations

from torch import Tensor

from pflnas.strategies import ArchGrads, Strategy
from pflnas.supernet import Supernet
from pflnas.train.guard import FiniteGuard, total_norm


class StepChecks:
    """``arch`` and ``weights`` are :class:`~pflnas.train.search_step.SearchStep`'s checks (eager steps);
    ``outputs`` reads what a step left (the alphas, and a replayed CUDA graph's outputs)."""

    def __init__(self, guard: FiniteGuard, model: Supernet, strategy: Strategy, graphed: bool):
        self.guard, self.strategy, self.graphed = guard, strategy, graphed
        arch_ids = {id(p) for p in model.arch_parameters()}
        named = list(model.named_parameters())
        self.named_weights = [(n, p) for n, p in named if id(p) not in arch_ids]
        self.named_alphas = [(n.removeprefix("arch."), p) for n, p in named if id(p) in arch_ids]

    def arch(self, arch: ArchGrads) -> bool:
        """After the architecture gradients are reduced: the objective and (eager) each alpha's gradient."""
        guard = self.guard
        guard.watch("the architecture-step loss", arch.loss)
        if guard.eager:  # deferred (GPU): non-finite gradients show in the alphas after the step
            named = ((f"grad of alpha {n}", p.grad) for n, p in self.named_alphas if p.grad is not None)
            guard.watch_each("the architecture gradients", named)
        return guard.ok()

    def weights(self, loss: Tensor) -> bool:
        """After the weight gradients, before clipping. Deferred (GPU) checks read the norm clipping
        computes anyway from the step's outputs instead."""
        guard = self.guard
        guard.watch("the training loss", loss)
        if guard.eager:
            named = ((f"grad of {n}", p.grad) for n, p in self.named_weights if p.grad is not None)
            guard.watch_each("the weight gradients", named)
        return guard.ok()

    def outputs(self, out: dict[str, Tensor], search_arch: bool) -> None:
        """After a step: the alphas it left (and, for a replayed CUDA graph, whose body has no checks, the
        step's outputs), as device-side verdicts read when due."""
        guard = self.guard
        if self.graphed:
            guard.watch("the architecture-step loss", out.get("arch_loss"))
            guard.watch("the training loss", out["loss"])
        if not guard.eager:  # clipping's norm: not finite iff some gradient is not
            guard.watch("the weight gradients", out.get("grad_norm"))
        if search_arch and self.strategy.updates_alphas:
            alphas = self.named_alphas
            guard.watch(
                "the architecture weights",
                total_norm(p for _, p in alphas),
                ((f"alpha {n}", p) for n, p in alphas),
                fatal=True,  # already applied: skipping the batch would not undo it
            )
        guard.ok()
