"""The strategy interface.

A strategy owns how architecture weights are turned into mixing weights and how they are updated. The
training loop owns data, the weight optimizer, AMP, devices and DDP: it hands the strategy batches that are
already on the device and a :class:`StepContext` with a loss closure (which applies the loop's autocast) and,
for second-order methods, the loop's virtual weight step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from pflnas.arch.derive import derive_architecture
from pflnas.arch.record import Architecture
from pflnas.config.search import ArchOptimConfig
from pflnas.supernet.network import Supernet

if TYPE_CHECKING:
    from pflnas.train.subnet_eval import SubnetEvaluator

Batch = tuple[Tensor, Tensor]


@dataclass
class StepContext:
    """What the loop gives a strategy for one architecture step.

    ``loss(batch)`` runs the supernet forward and the criterion under the loop's autocast and returns a
    scalar. ``virtual_step(params, grads)`` returns, for each weight, the update the loop's optimizer would
    subtract for those gradients (momentum and weight decay included), without changing any state.
    ``lr`` is the current weight learning rate; ``epoch`` (0-based) of ``epochs`` is where the search is,
    for strategies with schedules of their own (e.g. GDAS' temperature).

    Distributed search (the loop owns the process group; strategies never import ``torch.distributed``):
    ``reduce_grads(params)`` averages ``p.grad`` over all processes in place and must be called right
    before the architecture optimizer steps, so every process applies the same update; ``average(tensors)``
    returns the element-wise means over processes of gradient tensors a strategy uses itself (e.g. the
    unrolled step of second-order DARTS). Both are no-ops in a single process.
    """

    loss: Callable[[Batch], Tensor]
    virtual_step: Callable[[Sequence[Tensor], Sequence[Tensor]], list[Tensor]] | None = None
    lr: float = 0.0
    epoch: int = 0
    epochs: int = 1
    reduce_grads: Callable[[Sequence[Tensor]], None] = lambda params: None  # one process: nothing to do
    average: Callable[[Sequence[Tensor]], list[Tensor]] = list  # one process: the tensors themselves


class Strategy(ABC):
    """Contract:

    * :meth:`attach` is called once with the supernet (already on its device) before any step.
    * :meth:`arch_step` updates architecture weights only: every weight parameter is bitwise unchanged
      afterwards and its ``.grad`` is untouched (BatchNorm running statistics may move, as in DARTS).
    * :meth:`probabilities` returns ``{label: {op: p}}`` for every edge; :meth:`export` the discrete
      architecture the current state selects.
    * ``state_dict()`` / ``load_state_dict()`` round-trip everything the strategy owns beyond the
      supernet's own parameters (e.g. its optimizer), so a resumed search continues exactly.
    """

    name: ClassVar[str]
    # False for one-shot strategies whose architecture step only picks the path to train (SPOS)
    updates_alphas: ClassVar[bool] = True
    # True where every forward may run another path (GDAS, SPOS): torch.compile would recompile each time
    dynamic_path: ClassVar[bool] = False

    def __init__(self, arch_optim: ArchOptimConfig):
        self.arch_optim = arch_optim
        self.supernet: Supernet | None = None

    @abstractmethod
    def attach(self, supernet: Supernet) -> None: ...

    @abstractmethod
    def arch_step(self, train_batch: Batch, val_batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        """One architecture update; returns detached scalars to log (e.g. ``{"arch_loss": ...}``)."""

    def probabilities(self) -> dict[str, dict[str, float]]:
        assert self.supernet is not None, "attach() first"
        return self.supernet.probabilities()

    def export(self, provenance: dict[str, Any] | None = None) -> Architecture:
        assert self.supernet is not None, "attach() first"
        strengths = self.supernet.edge_strengths()
        if strengths:  # PC-DARTS: edge weights pick the edges, and the record keeps them
            provenance = {
                **(provenance or {}),
                "edge_normalization": {k: round(v, 6) for k, v in strengths.items()},
            }
        return derive_architecture(self.supernet.space, self.probabilities(), provenance, strengths)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers the strategy steps itself (the loop makes them CUDA-graph capturable when it
        replays steps as graphs). Default: ``self.optimizer`` when the strategy has one."""
        opt = getattr(self, "optimizer", None)
        return [opt] if isinstance(opt, torch.optim.Optimizer) else []

    def supernet_options(self) -> dict[str, Any]:
        """Keyword arguments the loop passes to ``build_supernet`` (e.g. PC-DARTS' partial channels)."""
        return {}

    def default_warmup_epochs(self, epochs: int) -> int:
        """Epochs of weight training before the first architecture step when the config does not say."""
        return 0

    def after_training(self, evaluate: SubnetEvaluator) -> list[dict[str, Any]] | None:
        """Called once after the last epoch, before :meth:`export`. A one-shot strategy (SPOS) searches the
        trained supernet here, scoring candidates with ``evaluate`` (inherited weights, BatchNorm
        recalibrated), and returns one row per scored candidate, which the loop writes to evolution.jsonl.
        Default: nothing to do (None)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
