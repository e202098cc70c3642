"""The expected latency of a supernet's architecture distribution, and the architecture loss that adds it.

``E[lat]`` is the latency table's cost (:mod:`pflnas.measure.latency_table`) averaged under the plain
softmax of the alphas, whatever the strategy mixes with, so every op's alpha gets a gradient. It is added
to the architecture loss only (``CE(held-out batch) + weight * E[lat]``); since it does not depend on the
weights, no weight gradient changes. The formula and its interaction with the strategies are on
:class:`LatencyTerm`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from pflnas.errors import PflnasError
from pflnas.measure.latency_table import LatencyTable
from pflnas.supernet.network import Supernet

Batch = tuple[Tensor, Tensor]


class LatencyTerm:
    """``weight * E[lat]`` of ``supernet`` under ``table`` (costs held as ``[choices, ops]`` tensors per
    alpha group, on the alphas' device, in ``alpha_matrix`` order).

    ``E[lat] = sum over choices c, ops o of p_c(o) * lat(c, o)`` where ``p_c = softmax(alpha_c)`` and
    ``lat(c, o)`` is the table's cost of op ``o`` at choice ``c`` (ms per batch; ``none`` costs 0). ``p`` is
    always the plain softmax: GDAS' forward runs hard Gumbel samples but its latency term is the soft
    expectation. PC-DARTS' edge normalisation is not used: a DARTS cell's edge cost already carries the
    share of edges a node keeps (``keep / in_degree``), which is what edge normalisation decides.
    """

    def __init__(self, supernet: Supernet, table: LatencyTable, weight: float):
        self.supernet = supernet
        self.table = table
        self.weight = float(weight)
        space = supernet.space
        device = supernet.alpha_matrix(next(iter(supernet.arch))).device
        self.costs: dict[str, Tensor] = {}
        for group in supernet.arch:
            rows = []
            for key in space.choice_keys():
                label = f"{group}.{key}"
                row = table.choices.get(label)
                missing = [op for op in space.group_ops(group) if row is None or op not in row]
                if missing:
                    raise PflnasError(
                        f"the latency table has no cost for {label} op(s) {', '.join(missing)}; "
                        "it was measured for another space"
                    )
                assert row is not None
                rows.append([row[op] for op in space.group_ops(group)])
            self.costs[group] = torch.tensor(rows, dtype=torch.float32, device=device)

    def expected(self) -> Tensor:
        """``E[lat]`` in ms per batch, differentiable in the alphas."""
        total = None
        for group, cost in self.costs.items():
            probs = torch.softmax(self.supernet.alpha_matrix(group).float(), dim=-1)
            term = (probs * cost).sum()
            total = term if total is None else total + term
        assert total is not None
        return total

    @torch.no_grad()
    def expected_ms(self) -> float:
        return float(self.expected().item())

    def objective(self, loss: Callable[[Batch], Tensor]) -> Callable[[Batch], Tensor]:
        """The architecture objective: ``loss(batch) + weight * E[lat]``, ``weight`` per millisecond.

        The loop composes it once and hands it to the strategy as the architecture loss, which strategies
        call on the held-out batch only: second-order DARTS' calls on training batches -- its virtual
        weight step and its finite-difference Hessian term -- stay pure cross-entropy; only ``d/d alpha``
        gains ``weight * dE[lat]/d alpha``.
        """

        def arch_loss(batch: Batch) -> Tensor:
            return loss(batch) + self.weight * self.expected()

        return arch_loss


def expected_latency(probs: Mapping[str, Mapping[str, float]], table: LatencyTable) -> float:
    """``E[lat]`` (ms) of op probabilities ``{label: {op: p}}`` (e.g. a found.json's or a metrics row's)."""
    return sum(p * table.choices[label][op] for label, dist in probs.items() for op, p in dist.items())
