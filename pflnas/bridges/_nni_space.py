"""The NNI 3.0 model space of a pflnas space (imports ``nni``; reach it through :mod:`pflnas.bridges.nni`).

Every candidate is the module the pflnas supernet builds for that position, and the macro skeletons mirror
:mod:`pflnas.supernet.network`, so NNI searches exactly the network pflnas would and its choice maps back
label for label. Choices with the same label (shared alpha mode) are one decision in NNI, as in pflnas.
The skeletons, layouts and labels are listed on :class:`PflnasModelSpace`.
"""

from __future__ import annotations

from typing import Any

import torch
from nni.nas.nn.pytorch import Cell, LayerChoice, ModelSpace
from torch import Tensor, nn

from pflnas.ops import create_op, get_op
from pflnas.ops.blocks import ResNetBasicBlock
from pflnas.ops.primitives import FactorizedReduce, ReLUConvBN
from pflnas.spaces.config import SpaceConfig, space_from_dict
from pflnas.spaces.labels import edge_key, edge_label
from pflnas.spaces.skeletons import BlockSite
from pflnas.supernet.mixed import candidate


def cell_op_names(space: SpaceConfig) -> list[str]:
    """The candidates of a DARTS cell's op choices in NNI: the space's ops less ``none``."""
    return [op for op in space.ops if not get_op(op).is_zero]


class _DartsPreprocess(nn.Module):
    """DARTS' preprocessing of a cell's two inputs (as :class:`pflnas.supernet.cells.DartsSearchCell`)."""

    def __init__(self, c_pp: int, c_p: int, c: int, reduction_prev: bool):
        super().__init__()
        self.preprocess0 = (
            FactorizedReduce(c_pp, c, affine=False) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, False)
        )
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        return [self.preprocess0(inputs[0]), self.preprocess1(inputs[1])]


class _CellOp:
    """Picklable op factory of an NNI ``Cell``: ``(node, op index, input index) -> module``."""

    def __init__(self, name: str, channels: int, reduction: bool, inputs: int, pool_bn: bool):
        self.name, self.channels, self.reduction = name, channels, reduction
        self.inputs, self.pool_bn = inputs, pool_bn

    def __call__(self, node: int, op_index: int, source: int | None) -> nn.Module:
        # NNI's DARTS space: an unknown source (the space's dry run) counts as an input of the cell.
        stride = 2 if self.reduction and (source is None or source < self.inputs) else 1
        return candidate(self.name, self.channels, stride, self.pool_bn)


def _darts_cell(
    space: SpaceConfig, group: str, c_pp: int, c_p: int, c: int, red: bool, red_prev: bool
) -> Cell:
    ops = {n: _CellOp(n, c, red, space.inputs, space.pool_bn) for n in cell_op_names(space)}
    return Cell(
        ops,
        num_nodes=space.nodes,
        num_ops_per_node=int(space.keep_edges or 2),
        num_predecessors=space.inputs,
        merge_op="all",
        preprocessor=_DartsPreprocess(c_pp, c_p, c, red_prev),
        label=group,
    )


class _EdgeCell(nn.Module):
    """A cell whose every edge is a ``LayerChoice`` over all the space's ops, labelled with its pflnas label
    (``cell3.edge2<-0``); a node sums its incoming edges (the pflnas supernet's cell, edge for edge)."""

    def __init__(self, space: SpaceConfig, group: str, channels: int, reduction: bool, pre: nn.Module | None):
        super().__init__()
        self.space = space
        self.preprocess = pre
        cell_type = "reduce" if reduction else "normal"
        self.edges = nn.ModuleDict(
            {
                edge_key(n, s): LayerChoice(
                    {
                        op: candidate(op, channels, space.edge_stride(cell_type, s), space.pool_bn)
                        for op in space.ops
                    },
                    label=edge_label(group, n, s),
                )
                for n, s in space.edges()
            }
        )

    def forward(self, *inputs: Tensor) -> Tensor:
        states = list(inputs) if self.preprocess is None else self.preprocess(list(inputs))
        for node in self.space.node_ids():
            states.append(sum(self.edges[edge_key(node, s)](states[s]) for s in range(node)))
        out = [states[i] for i in self.space.concat()]
        return out[0] if len(out) == 1 else torch.cat(out, dim=1)


class PflnasModelSpace(ModelSpace):
    """A pflnas search space as an NNI 3.0 model space.

    Candidates: :func:`pflnas.supernet.mixed.candidate` for cells (affine-free BN, BN after pooling when
    ``pool_bn``); :func:`pflnas.ops.create_op` in the space's context for blocks. Skeletons:

    * ``darts_cell``: stem, ``layers`` cells with reductions at 1/3 and 2/3, global pool, classifier, with
      one of two cell layouts:

      - ``layout="cell"`` (NNI's own DARTS space): each cell is an ``nni.nas.nn.pytorch.Cell`` labelled
        with the pflnas alpha group (``cell3``, or ``normal`` / ``reduce`` in shared mode) with
        ``keep_edges`` (2) ops per node; its choices read ``cell3/op_{node}_{k}`` (an op) and
        ``cell3/input_{node}_{k}`` (a source). NNI's differentiable strategies turn such a cell into every
        edge ``cell3/{node}_{source}`` with one alpha per candidate plus one for NNI's own "no edge" (its
        ``none``), so the space's ``none`` op, if it has one, is not listed again. Every NNI strategy but
        Proxyless takes it.
      - ``layout="edges"`` (pflnas' own supernet): every edge is a ``LayerChoice`` over all the space's
        ops labelled with its pflnas label (``cell3.edge2<-0``); a node sums its incoming edges.
        Proxyless needs it (NNI 3.0 has no Proxyless ``Cell``).
    * ``nb201_cell``: the NAS-Bench-201 skeleton with edge cells as above (``cell.edge2<-0``); the output
      is the last node.
    * block spaces: the pflnas body (ResNet / ViT / PiT) whose every slot is a ``LayerChoice`` labelled
      ``block3.op`` (or ``normal.op`` / ``reduce.op`` in shared mode).

    ``space`` is the resolved space as :meth:`SpaceConfig.to_dict` gives it (plain data, so NNI can record
    and replay the constructor when it freezes an architecture).
    """

    def __init__(
        self,
        space: dict[str, Any],
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        layout: str = "cell",
    ):
        super().__init__()
        cfg = space_from_dict(dict(space), "space")
        self.pflnas_space = cfg
        self.layout = layout
        if cfg.kind == "darts_cell":
            self._build_darts(cfg, num_classes, in_channels, layout)
        elif cfg.kind == "nb201_cell":
            self._build_nb201(cfg, num_classes, in_channels)
        else:
            self._build_blocks(cfg, num_classes, in_channels, image_size)

    def _build_darts(self, space: SpaceConfig, num_classes: int, in_channels: int, layout: str) -> None:
        c = space.init_channels
        c_stem = space.stem_multiplier * c
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem)
        )
        c_pp, c_p, c_cur = c_stem, c_stem, c
        reductions = space.reduction_layers()
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(space.layers):
            reduction = i in reductions
            if reduction:
                c_cur *= 2
            group = space.group_of_cell(i)
            if layout == "cell":
                cell = _darts_cell(space, group, c_pp, c_p, c_cur, reduction, reduction_prev)
            else:
                pre = _DartsPreprocess(c_pp, c_p, c_cur, reduction_prev)
                cell = _EdgeCell(space, group, c_cur, reduction, pre)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, space.nodes * c_cur
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def _build_nb201(self, space: SpaceConfig, num_classes: int, in_channels: int) -> None:
        c = space.init_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.cells = nn.ModuleList()
        c_prev, index = c, 0
        for stage in range(3):
            c_stage = c * 2**stage
            if stage > 0:
                self.cells.append(ResNetBasicBlock(c_prev, c_stage, 2))
            for _ in range(space.layers):
                self.cells.append(_EdgeCell(space, space.group_of_cell(index), c_stage, False, None))
                index += 1
            c_prev = c_stage
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def _build_blocks(self, space: SpaceConfig, num_classes: int, in_channels: int, image_size: int) -> None:
        def slot(site: BlockSite, channels: int, heads: int) -> nn.Module:
            group = space.group_of_block(site.index)
            ops = space.ops_at(site.stride)
            return LayerChoice(
                {
                    op: create_op(op, channels, channels, site.stride, context=space.context, heads=heads)
                    for op in ops
                },
                label=f"{group}.{space.choice_keys()[0]}",
            )

        body = space.kind_spec.body_class()  # type: ignore[attr-defined]
        self.body = body(space.skeleton_config(), slot, num_classes, in_channels, image_size)  # type: ignore[call-arg]

    def forward(self, x: Tensor) -> Tensor:
        space = self.pflnas_space
        if space.is_block:
            return self.body(x)
        if space.kind == "darts_cell":
            s0 = s1 = self.stem(x)
            for cell in self.cells:
                s0, s1 = s1, cell(s0, s1)
            return self.classifier(self.global_pool(s1).flatten(1))
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.classifier(self.global_pool(self.lastact(x)).flatten(1))


def build(
    space: SpaceConfig, num_classes: int, in_channels: int, image_size: int, layout: str
) -> PflnasModelSpace:
    return PflnasModelSpace(space.to_dict(), num_classes, in_channels, image_size, layout)
