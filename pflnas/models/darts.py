"""DARTS derived networks (``cnn/model.py`` of quark0/darts), built from an architecture record.

Layer for layer as DARTS, so parameter counts match the published ones exactly (a golden test checks
DARTS_V2: 3,349,342 on CIFAR-10 and 4,718,752 on ImageNet, auxiliary head excluded). Departures, none of
which changes a number: the cell reads its edges from the record instead of a genotype; the ReLUs that
DARTS runs in place on a tensor that is used again (aux head input, ImageNet ``stem1`` input) are not in
place; ``forward`` returns logits or :class:`AuxOutput` (see :mod:`pflnas.models.factory`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pflnas.arch.record import Architecture, CellArch
from pflnas.errors import ArchitectureError, ConfigError
from pflnas.models.cell_map import darts_network_cells
from pflnas.models.factory import AuxOutput, NetworkConfig, register_network
from pflnas.ops import create_op
from pflnas.ops.primitives import FactorizedReduce, ReLUConvBN

_INPUTS = 2  # a DARTS cell reads the outputs of the two previous cells


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    """Zero whole samples with probability ``drop_prob`` and rescale the rest (DARTS ``utils.drop_path``)."""
    keep = 1.0 - drop_prob
    mask = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep)
    return x / keep * mask


class DartsCell(nn.Module):
    """A derived DARTS cell: preprocess both inputs, each node sums its kept edges, concat the nodes."""

    def __init__(
        self, cell: CellArch, c_prev_prev: int, c_prev: int, c: int, reduction: bool, reduction_prev: bool
    ):
        super().__init__()
        if (cell.type == "reduce") != reduction:
            role = "reduction" if reduction else "normal"
            raise ArchitectureError(
                f"record cell {cell.name!r} ({cell.type}) cannot be used as a {role} cell"
            )
        self.name = cell.name
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, c)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0)
        edges = sorted(cell.edges, key=lambda e: e.node)  # stable: keeps the record's order within a node
        self.ops = nn.ModuleList(
            create_op(e.op, c, c, 2 if reduction and e.source < _INPUTS else 1, affine=True) for e in edges
        )
        self.sources = tuple(e.source for e in edges)
        # for each intermediate node in order, the indices of its edges in self.ops
        nodes = sorted({e.node for e in edges})
        self.node_edges = tuple(tuple(k for k, e in enumerate(edges) if e.node == n) for n in nodes)
        self.concat = tuple(cell.concat)
        self.multiplier = len(self.concat)

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float = 0.0) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for edge_ids in self.node_edges:
            total: Tensor | None = None
            for k in edge_ids:
                op = self.ops[k]
                h = op(states[self.sources[k]])
                if self.training and drop_prob > 0.0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            assert total is not None  # a valid record gives every node its incoming edges
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS' CIFAR auxiliary classifier; expects 8x8 inputs."""

    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class AuxiliaryHeadImageNet(nn.Module):
    """DARTS' ImageNet auxiliary classifier; expects 14x14 inputs.

    Like DARTS' final code it has no BatchNorm after the 2x2 conv (omitted in the paper's experiments).
    """

    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class _DartsNetwork(nn.Module):
    """Cells with reductions at ``layers // 3`` and ``2 * layers // 3`` (channels double there), the
    auxiliary head after cell ``2 * layers // 3``, global pooling and a linear classifier.

    ``drop_path_prob`` is a plain attribute the training loop may change between epochs.
    """

    def _build_cells(self, cells: Sequence[CellArch], c: int, c_stem: int, reduction_prev: bool) -> int:
        layers = len(cells)
        reductions = (layers // 3, 2 * layers // 3)
        self.aux_index = 2 * layers // 3
        c_pp, c_p, c_cur = c_stem, c_stem, c
        self.cells = nn.ModuleList()
        self.c_aux = 0
        for i, record_cell in enumerate(cells):
            reduction = i in reductions
            if reduction:
                c_cur *= 2
            cell = DartsCell(record_cell, c_pp, c_p, c_cur, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_cur
            if i == self.aux_index:
                self.c_aux = c_p
        return c_p

    def _run_cells(self, s0: Tensor, s1: Tensor) -> tuple[Tensor, Tensor | None]:
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        return s1, logits_aux

    def _output(self, logits: Tensor, logits_aux: Tensor | None) -> Tensor | AuxOutput:
        return logits if logits_aux is None else AuxOutput(logits, logits_aux)


class NetworkCIFAR(_DartsNetwork):
    """DARTS ``NetworkCIFAR``: Conv3x3 stem to ``stem_multiplier * C`` channels, then the cells."""

    def __init__(
        self,
        cells: Sequence[CellArch],
        c: int,
        num_classes: int,
        auxiliary: bool = False,
        drop_path_prob: float = 0.0,
        in_channels: int = 3,
        stem_multiplier: int = 3,
    ):
        super().__init__()
        self.drop_path_prob = drop_path_prob
        c_stem = stem_multiplier * c
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem)
        )
        c_last = self._build_cells(cells, c, c_stem, reduction_prev=False)
        self.auxiliary_head = AuxiliaryHeadCIFAR(self.c_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_last, num_classes)

    def forward(self, x: Tensor) -> Tensor | AuxOutput:
        s = self.stem(x)
        out, logits_aux = self._run_cells(s, s)
        return self._output(self.classifier(self.global_pooling(out).flatten(1)), logits_aux)


class NetworkImageNet(_DartsNetwork):
    """DARTS ``NetworkImageNet``: two stride-2 stems (224 -> 28), the cells, 7x7 average pooling."""

    def __init__(
        self,
        cells: Sequence[CellArch],
        c: int,
        num_classes: int,
        auxiliary: bool = False,
        drop_path_prob: float = 0.0,
        in_channels: int = 3,
    ):
        super().__init__()
        if c % 2:
            raise ConfigError(f"an ImageNet DARTS network needs an even init_channels, got {c}")
        self.drop_path_prob = drop_path_prob
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, c // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c),
        )
        c_last = self._build_cells(cells, c, c, reduction_prev=True)
        self.auxiliary_head = AuxiliaryHeadImageNet(self.c_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AvgPool2d(7)
        self.classifier = nn.Linear(c_last, num_classes)

    def forward(self, x: Tensor) -> Tensor | AuxOutput:
        s0 = self.stem0(x)
        out, logits_aux = self._run_cells(s0, self.stem1(s0))
        return self._output(self.classifier(self.global_pooling(out).flatten(1)), logits_aux)


@register_network("darts_cell", "cifar", init_channels=36, layers=20, min_layers=3)
def _darts_cifar(arch: Architecture, config: NetworkConfig) -> nn.Module:
    return NetworkCIFAR(
        darts_network_cells(arch, config.layers),
        config.init_channels,
        config.num_classes,
        config.auxiliary,
        config.drop_path,
        config.in_channels,
        arch.space.stem_multiplier,
    )


@register_network("darts_cell", "imagenet", init_channels=48, layers=14, min_layers=3)
def _darts_imagenet(arch: Architecture, config: NetworkConfig) -> nn.Module:
    return NetworkImageNet(
        darts_network_cells(arch, config.layers),
        config.init_channels,
        config.num_classes,
        config.auxiliary,
        config.drop_path,
        config.in_channels,
    )
