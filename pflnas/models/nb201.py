"""The NAS-Bench-201 inference network (``TinyNetwork`` / ``InferCell`` of D-X-Y/AutoDL-Projects,
``xautodl/models/cell_infers/``), built from an architecture record.

Layer for layer as the reference, so parameter counts match NAS-Bench-201 exactly (golden tests). One
departure: ``forward`` returns the logits only (the reference returns ``(pooled features, logits)``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from pflnas.arch.record import Architecture, CellArch
from pflnas.models.cell_map import nb201_network_cells
from pflnas.models.factory import NetworkConfig, register_network
from pflnas.ops import create_op
from pflnas.ops.blocks import ResNetBasicBlock


class InferCell(nn.Module):
    """A derived NB201 cell: node ``j`` sums ``op(node i)`` over ``i < j``; the output is the last node."""

    def __init__(self, cell: CellArch, c: int):
        super().__init__()
        self.name = cell.name
        edges = sorted(cell.edges, key=lambda e: (e.node, e.source))
        self.ops = nn.ModuleList(create_op(e.op, c, c, 1, affine=True) for e in edges)
        self.sources = tuple(e.source for e in edges)
        nodes = sorted({e.node for e in edges})
        self.node_edges = tuple(tuple(k for k, e in enumerate(edges) if e.node == n) for n in nodes)

    def forward(self, x: Tensor) -> Tensor:
        states = [x]
        for edge_ids in self.node_edges:
            states.append(sum(self.ops[k](states[self.sources[k]]) for k in edge_ids))  # type: ignore[arg-type]
        return states[-1]


class TinyNetwork(nn.Module):
    """NB201 macro skeleton: Conv3x3 stem, 3 stages of ``N`` cells at C, 2C, 4C channels separated by
    residual reduction blocks, BN-ReLU, global pooling, linear classifier.

    ``cells`` holds the ``3 * N`` searchable cells in order.
    """

    def __init__(self, cells: Sequence[CellArch], c: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        if len(cells) % 3:
            raise ValueError(f"TinyNetwork needs 3 stages of equal length, got {len(cells)} cells")
        n = len(cells) // 3
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.cells = nn.ModuleList()
        c_prev = c
        for stage in range(3):
            c_cur = c * 2**stage
            if stage:
                self.cells.append(ResNetBasicBlock(c_prev, c_cur, 2, affine=True))
            self.cells.extend(InferCell(cell, c_cur) for cell in cells[stage * n : (stage + 1) * n])
            c_prev = c_cur
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        feature = self.stem(x)
        for cell in self.cells:
            feature = cell(feature)
        return self.classifier(self.global_pooling(self.lastact(feature)).flatten(1))


@register_network("nb201_cell", "cifar", init_channels=16, layers=5, auxiliary=False, drop_path=False)
def _nb201(arch: Architecture, config: NetworkConfig) -> nn.Module:
    return TinyNetwork(
        nb201_network_cells(arch, config.layers), config.init_channels, config.num_classes, config.in_channels
    )
