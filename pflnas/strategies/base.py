"""The strategy interface.

A strategy owns how architecture weights are turned into mixing weights and how they are updated. The
training loop owns data, the weight optimizer, AMP, devices and DDP. An architecture step is split in two
so that the loop stays in charge between them: :meth:`Strategy.arch_grads` computes the alpha gradients
from the batches and a :class:`StepContext` (loss closures under the loop's autocast, the virtual weight
step of second-order methods); the loop then averages them over processes, checks them for NaN/Inf and,
if they pass, calls :meth:`Strategy.apply_arch_grads`. Nothing calls back into the loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from pflnas.arch.derive import derive_architecture
from pflnas.arch.record import Architecture
from pflnas.config.search import ArchOptimConfig
from pflnas.errors import ConfigError
from pflnas.supernet.network import Supernet

if TYPE_CHECKING:
    from pflnas.strategies.subnet_eval import SubnetEvaluator

Batch = tuple[Tensor, Tensor]


@dataclass
class StepContext:
    """What the loop gives a strategy for one architecture step.

    ``loss(batch)`` runs the supernet forward and the criterion under the loop's autocast and returns the
    loss per seed: a scalar for one supernet, ``[N]`` for a grouped one (N seeds' searches as one network,
    :mod:`pflnas.supernet.grouped`); strategies differentiate its sum, which gives each seed its own
    gradient. It is the training objective (second-order DARTS calls it on training batches).
    ``arch_loss(batch)``, when given, is the architecture objective on the held-out batch (a latency-aware
    search adds ``weight * E[latency]``, see :mod:`pflnas.measure.latency_objective`); strategies call it
    through :meth:`objective`, which falls back to ``loss``. ``virtual_step(params, grads)`` returns, for each
    weight, the update the loop's optimizer would subtract for those gradients (momentum and weight decay
    included), without changing any state. ``lr`` is the current weight learning rate; ``epoch`` (0-based)
    of ``epochs`` is where the search is, for strategies with schedules of their own (GDAS' temperature).
    ``average(tensors)`` returns the element-wise means over processes of gradient tensors a strategy uses
    itself (the unrolled step of second-order DARTS); the identity in one process. Strategies never import
    ``torch.distributed``: the loop averages the alpha gradients they return.
    """

    loss: Callable[[Batch], Tensor]
    virtual_step: Callable[[Sequence[Tensor], Sequence[Tensor]], list[Tensor]] | None = None
    lr: float = 0.0
    epoch: int = 0
    epochs: int = 1
    average: Callable[[Sequence[Tensor]], list[Tensor]] = list  # one process: the tensors themselves
    arch_loss: Callable[[Batch], Tensor] | None = None

    def objective(self, batch: Batch) -> Tensor:
        """The architecture objective on the held-out ``batch`` (``arch_loss``, or else ``loss``)."""
        return (self.arch_loss or self.loss)(batch)


@dataclass
class ArchGrads:
    """What :meth:`Strategy.arch_grads` computed: the architecture objective's value ``loss``, one gradient
    per architecture parameter (in ``arch_parameters()`` order) and any other scalars to log."""

    loss: Tensor
    grads: list[Tensor]
    logs: dict[str, Tensor] = field(default_factory=dict)

    def to_logs(self) -> dict[str, Tensor]:
        return {"arch_loss": self.loss.detach(), **self.logs}


# Single-path strategies (``dynamic_path``: GDAS, SPOS) asked for the batched layout run per source: a
# sampled path runs one op per edge, so there is nothing to batch, and per-edge parameters keep the optimizer
# exact (an edge off the path has no gradient and is not stepped; a slice of a wide tensor would still decay
# and move by momentum).
SINGLE_PATH_FALLBACK = {"batched": "per_source"}
SINGLE_PATH_WHY = "one sampled op per edge leaves nothing to batch"


class Strategy(ABC):
    """Contract:

    * :meth:`attach` is called once with the supernet (already on its device) before any step.
    * :meth:`arch_grads` computes the architecture gradients and changes no parameter: every weight and
      alpha is bitwise unchanged afterwards and no ``.grad`` is touched (BatchNorm running statistics may
      move, as in DARTS). It returns None where there is nothing to update (SPOS).
    * :meth:`apply_arch_grads` steps the architecture optimizer on the alphas' ``.grad`` (set, averaged and
      checked by the loop) and clears them. :meth:`arch_step` is the two in one process, unchecked.
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
    # True where N seeds' searches can run as one grouped supernet (pflnas.supernet.grouped): dense softmax
    # mixing with elementwise optimizers (pflnas search --seeds)
    seed_groups: ClassVar[bool] = False

    def __init__(self, arch_optim: ArchOptimConfig):
        self.arch_optim = arch_optim
        self.supernet: Supernet | None = None

    @abstractmethod
    def attach(self, supernet: Supernet) -> None: ...

    @abstractmethod
    def arch_grads(self, train_batch: Batch, val_batch: Batch, ctx: StepContext) -> ArchGrads | None:
        """The architecture gradients of one step (None: nothing to update)."""

    def apply_arch_grads(self) -> None:
        """Step the architecture optimizer on the alphas' gradients, then clear them."""
        optimizer = getattr(self, "optimizer", None)
        assert isinstance(optimizer, torch.optim.Optimizer), "attach() first"
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def arch_step(self, train_batch: Batch, val_batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        """One architecture update in one process, without checks (the search loop runs the two halves
        itself, see :class:`pflnas.train.search_step.SearchStep`); returns detached scalars to log."""
        assert self.supernet is not None, "attach() first"
        arch = self.arch_grads(train_batch, val_batch, ctx)
        if arch is None:
            return {}
        set_grads(self.supernet.arch_parameters(), arch.grads)
        self.apply_arch_grads()
        return arch.to_logs()

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

    layouts: tuple[str, ...] = ("per_edge", "per_source")  # the supernet layouts (space.layout) it runs on

    def layout_for(self, layout: str) -> str:
        """The supernet layout this strategy runs for a requested ``space.layout`` (ConfigError if none):
        single-path strategies swap by :data:`SINGLE_PATH_FALLBACK`."""
        run = SINGLE_PATH_FALLBACK.get(layout, layout) if self.dynamic_path else layout
        if run not in self.layouts:
            raise ConfigError(
                f"strategy {self.name!r} does not run on space.layout={layout} yet; "
                f"use one of {', '.join(self.layouts)}"
            )
        return run

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


def set_grads(params: Sequence[Tensor], grads: Sequence[Tensor]) -> None:
    """``p.grad = g`` for each pair (the loop's and :meth:`Strategy.arch_step`'s first half of applying)."""
    for p, g in zip(params, grads):
        p.grad = g
