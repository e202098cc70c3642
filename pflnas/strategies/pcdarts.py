"""PC-DARTS (Xu et al., ICLR 2020): DARTS on a supernet with partial channel connections and edge
normalisation.

Each mixed edge runs its candidates on 1/K of the channels (K=4) and passes the rest through (max-pooled on
strided edges), then shuffles the channels; every intermediate node weighs its incoming edges by a softmax
of its own parameters (``cell3.node2``), which also decide which edges a node keeps. Architecture steps are
first order (Adam on held-out batches) and start after a warm-up of weight training (15 of the protocol's
50 epochs; the same 30% of shorter searches unless ``strategy.warmup_epochs`` says otherwise). The
``pcdarts`` preset holds the paper's batch 256 and learning rates.
"""

from __future__ import annotations

from typing import Any

from pflnas.config.search import ArchOptimConfig
from pflnas.strategies.base import Strategy
from pflnas.strategies.darts import DARTS

PARTIAL_CHANNELS = 4
WARMUP_SHARE = 15 / 50


class PCDARTS(DARTS):
    name = "pcdarts"
    layouts = ("per_edge", "per_source", "batched")  # the batched layout runs partial channels per source

    def __init__(self, arch_optim: ArchOptimConfig, partial_channels: int = PARTIAL_CHANNELS):
        super().__init__(arch_optim, unrolled=False)
        self.partial_channels = partial_channels

    def supernet_options(self) -> dict[str, Any]:
        return {"partial_channels": self.partial_channels, "edge_norm": True}

    def default_warmup_epochs(self, epochs: int) -> int:
        return int(round(WARMUP_SHARE * epochs))


def pcdarts(arch_optim: ArchOptimConfig) -> Strategy:
    return PCDARTS(arch_optim)
