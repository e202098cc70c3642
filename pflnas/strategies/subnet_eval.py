"""Run one discrete candidate in a supernet, and score candidates with inherited weights.

Single-path strategies and the search after training need the supernet to compute exactly one candidate
without touching the alphas (:class:`PathSelector`), and a candidate's score is only meaningful once its
BatchNorm statistics match its own path (:class:`SubnetEvaluator` recalibrates them). Everything the
evaluator changes in the supernet is restored when it is closed.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from pflnas.arch.genome import GenomeSpace
from pflnas.arch.record import Architecture
from pflnas.config.search import SposConfig
from pflnas.errors import ConfigError
from pflnas.ops import PARAM_FREE, get_op
from pflnas.spaces.config import SpaceConfig
from pflnas.supernet.network import Supernet

Batch = tuple[Tensor, Tensor]
Candidate = Architecture | Mapping[str, str]


class Sync(Protocol):
    """The loop's view of the process group (:class:`pflnas.train.dist_search.SearchSync`)."""

    @property
    def distributed(self) -> bool: ...

    def sum_(self, t: Tensor) -> Tensor: ...

    def average_bn_statistics(self, model: nn.Module) -> None: ...


def idle_index(space: SpaceConfig, ops: tuple[str, ...], stride: int) -> int:
    """The op a dropped edge runs (times 0): ``none`` if the space has it, else the identity or another
    parameter-free op at ``stride``, else the first."""
    for i, op in enumerate(ops):
        if get_op(op).is_zero:
            return i
    if "skip_connect" in ops and get_op("skip_connect").role(stride) == PARAM_FREE:
        return ops.index("skip_connect")
    for i, op in enumerate(ops):
        if get_op(op).role(stride) == PARAM_FREE:
            return i
    return 0


class PathSelector:
    """Makes ``supernet`` compute one candidate (a genome of :class:`GenomeSpace`) per forward.

    Each choice runs only its chosen op with mixing weight 1 (the single-path forward GDAS uses), and a
    DARTS edge the candidate does not keep gets mixing weight 0, so it contributes exact zeros (it runs
    :func:`idle_index`'s op times 0). The mixing weights of each alpha group come from the selection, not
    from the alphas, which stay untouched.

    :meth:`install` sets the supernet's mixing and a forward pre-hook; :meth:`select` chooses the
    candidate; ``before_forward`` (if set) runs first in every forward, e.g. to select a new random path.
    :meth:`remove` restores the previous mixing.
    """

    def __init__(self, supernet: Supernet, genomes: GenomeSpace | None = None):
        if supernet.edge_norm is not None:
            raise ConfigError("a single candidate cannot be selected in a supernet with edge normalisation")
        self.supernet = supernet
        space = supernet.space
        self.genomes = genomes or GenomeSpace.of(space)
        self.groups = list(supernet.arch)  # Supernet.edge_weights() mixes the groups in this order
        types = dict(space.alpha_groups())
        self._ops = {g: tuple(space.group_ops(g)) for g in self.groups}
        self._idle: dict[str, int] = {}
        if not space.is_block:
            for g in self.groups:
                for node, src in space.edges():
                    label = f"{g}.edge{node}<-{src}"
                    self._idle[label] = idle_index(space, self._ops[g], space.edge_stride(types[g], src))
        self.before_forward: Callable[[], None] | None = None
        self.selected: dict[str, str | None] | None = None
        self._weights: list[Tensor] = []
        self._calls = 0
        self._hook: Any = None
        self._saved: tuple[Any, bool] | None = None

    def install(self) -> None:
        if self._hook is not None:
            return
        net = self.supernet
        self._saved = (net.mixing, net.single_path)
        net.set_mixing(self._mix, single_path=False)
        self._hook = net.register_forward_pre_hook(self._pre_forward)
        self._weights = []

    def remove(self) -> None:
        if self._hook is None:
            return
        self._hook.remove()
        self._hook = None
        assert self._saved is not None
        self.supernet.set_mixing(*self._saved)
        self.supernet.set_active(None)

    def select(self, genome: Mapping[str, str]) -> None:
        """Make the following forwards compute ``genome``."""
        decisions = self.genomes.edge_ops(genome)
        keys = self.supernet.space.choice_keys()
        active: dict[str, list[int]] = {}
        shapes, hot = [], []
        offset = 0
        for g in self.groups:
            ops = self._ops[g]
            picks = []
            for row, key in enumerate(keys):
                label = f"{g}.{key}"
                op = decisions[label]
                if op is None:
                    picks.append(self._idle[label])  # weight 0: the edge contributes zeros
                else:
                    picks.append(ops.index(op))
                    hot.append(offset + row * len(ops) + picks[-1])
            active[g] = picks
            shapes.append((len(keys), len(ops)))
            offset += len(keys) * len(ops)
        alpha = next(iter(self.supernet.arch_parameters()))
        flat = torch.zeros(offset, dtype=alpha.dtype)
        flat[hot] = 1.0
        flat = flat.to(alpha.device, non_blocking=True)
        self._weights = list(
            w.view(shape) for w, shape in zip(flat.split([r * c for r, c in shapes]), shapes)
        )
        self.supernet.set_active(active)
        self.selected = decisions

    def _pre_forward(self, module: nn.Module, args: Any) -> None:
        if self.before_forward is not None:
            self.before_forward()
        self._calls = 0

    def _mix(self, alphas: Tensor) -> Tensor:
        if not self._weights:
            raise RuntimeError("PathSelector: select() a candidate before the forward")
        w = self._weights[self._calls % len(self._weights)]
        self._calls += 1
        if w.shape != alphas.shape:
            raise RuntimeError(
                f"PathSelector: mixing weights {tuple(w.shape)} for alphas {tuple(alphas.shape)}"
            )
        return w if w.dtype == alphas.dtype else w.to(alphas.dtype)


def batchnorms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Batch], autocast: Callable[[], Any]) -> int:
    """Reset every BatchNorm's running statistics and recompute them as the plain average over
    ``batches`` (momentum None), in train mode without gradients; returns the number of batches used."""
    bns = batchnorms(model)
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    n = 0
    try:
        for x, _ in batches:
            with autocast():
                model(x)
            n += 1
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
    return n


class SubnetEvaluator:
    """Scores candidates of a trained supernet with inherited weights.

    What the search loop hands a one-shot strategy after training
    (:meth:`pflnas.strategies.Strategy.after_training`): for a candidate it selects the path, recalibrates
    every BatchNorm's running statistics on ``bn_batches`` training batches (statistics reset, cumulative
    average, train mode, no gradients), then returns the accuracy on ``eval_batches`` held-out batches in
    eval mode. The supernet's BatchNorm statistics, mixing and mode are restored by :meth:`close`.

    ``train_batches`` / ``eval_batches``: iterables of device batches (the loop's training loader and its
    held-out loader); the first ``config.bn_batches`` / ``config.eval_batches`` (None: all) are read once
    and reused for every candidate, so every candidate sees the same data. ``seed`` and ``config`` are
    for the strategy (e.g. its search's random stream and budget). Under torchrun (``sync``) every rank
    recalibrates on its own batches, the statistics are averaged over ranks, and the accuracy counts every
    rank's held-out shard, so all ranks score a candidate alike. Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(
        self,
        supernet: Supernet,
        train_batches: Iterable[Batch],
        eval_batches: Iterable[Batch],
        config: SposConfig | None = None,
        seed: int = 0,
        autocast: Callable[[], Any] | None = None,
        progress: bool = False,
        sync: Sync | None = None,
    ):
        self.supernet = supernet
        self.config = config or SposConfig()
        self.seed = seed
        self.progress = progress
        self.sync = sync if sync is not None and sync.distributed else None
        self._train_source = train_batches
        self._eval_source = eval_batches
        self._autocast = autocast or contextlib.nullcontext
        self._selector: PathSelector | None = None
        self._bn_batches: list[Batch] = []
        self._eval_batches: list[Batch] = []
        self._saved_bn: list[tuple[Tensor, Tensor]] = []
        self._was_training = supernet.training
        self.calls = 0

    @property
    def space(self) -> SpaceConfig:
        return self.supernet.space

    @property
    def genomes(self) -> GenomeSpace:
        return self._ensure().genomes

    def _ensure(self) -> PathSelector:
        if self._selector is None:
            self._saved_bn = [
                (buf, buf.detach().clone())
                for m in batchnorms(self.supernet)
                for buf in m.buffers(recurse=False)
            ]
            self._was_training = self.supernet.training
            self._selector = PathSelector(self.supernet)
            self._selector.install()
            cfg = self.config
            self._bn_batches = list(itertools.islice(self._train_source, cfg.bn_batches))
            self._eval_batches = list(itertools.islice(self._eval_source, cfg.eval_batches))
        return self._selector

    def genome_of(self, candidate: Candidate) -> dict[str, str]:
        selector = self._ensure()
        if isinstance(candidate, Architecture):
            return selector.genomes.from_architecture(candidate)
        genome = dict(candidate)
        selector.genomes.check(genome)
        return genome

    @torch.no_grad()
    def evaluate(self, candidate: Candidate) -> dict[str, float]:
        """``{"accuracy", "loss", "images"}`` of ``candidate`` on the held-out batches."""
        selector = self._ensure()
        selector.select(self.genome_of(candidate))
        net = self.supernet
        if self.config.bn_batches > 0:
            recalibrate_batchnorm(net, self._bn_batches, self._autocast)
            if self.sync is not None:
                self.sync.average_bn_statistics(net)
        net.eval()
        device = next(net.parameters()).device
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros_like(loss_sum)
        count = 0
        for x, y in self._eval_batches:
            with self._autocast():
                logits = net(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            count += len(y)
        if self.sync is not None:
            totals = self.sync.sum_(torch.stack([loss_sum, correct, loss_sum.new_tensor(count)]))
            loss_sum, correct, count = totals[0], totals[1], int(totals[2].item())
        if count == 0:
            raise ConfigError("the held-out split yields no images to score candidates on")
        self.calls += 1
        return {"accuracy": (correct / count).item(), "loss": (loss_sum / count).item(), "images": count}

    def __call__(self, candidate: Candidate) -> float:
        return self.evaluate(candidate)["accuracy"]

    def close(self) -> None:
        """Restore the supernet's BatchNorm statistics, mixing and mode."""
        if self._selector is None:
            return
        with torch.no_grad():
            for buf, saved in self._saved_bn:
                buf.copy_(saved)
        self._selector.remove()
        self._selector = None
        self._bn_batches, self._eval_batches, self._saved_bn = [], [], []
        self.supernet.train(self._was_training)

    def __enter__(self) -> SubnetEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
