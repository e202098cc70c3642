"""The supernet: a macro skeleton of search cells plus architecture weights as registered parameters.

Architecture weights live in ``self.arch[group][edge]`` (``nn.ParameterDict`` per alpha group), so their
``state_dict`` keys read ``arch.cell3.edge2<-0`` and the label users see is ``cell3.edge2<-0``. They move
with ``.to(device)`` and are split from the network weights by :meth:`Supernet.arch_parameters` /
:meth:`Supernet.weight_parameters`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from pflnas.config.validate import resolve_layout
from pflnas.errors import ConfigError
from pflnas.ops.blocks import ResNetBasicBlock
from pflnas.spaces.config import SpaceConfig
from pflnas.spaces.kinds import BlockKind
from pflnas.spaces.labels import edge_key
from pflnas.spaces.skeletons import BlockSite
from pflnas.supernet.cells import DartsSearchCell, NB201SearchCell
from pflnas.supernet.mixed import MixedOp

Mixing = Callable[[Tensor], Tensor]


def softmax_mixing(alphas: Tensor) -> Tensor:
    return torch.softmax(alphas, dim=-1)


def edge_norm_parameters(space: SpaceConfig, *lead: int) -> nn.ModuleDict:
    """PC-DARTS' edge-normalisation parameters: per alpha group and node, one per incoming edge
    (``edge_norm.cell3.node2``), of shape ``[*lead, edges of the node]``."""
    return nn.ModuleDict(
        {
            group: nn.ParameterDict(
                {
                    f"node{n}": nn.Parameter(
                        1e-3 * torch.randn(*lead, sum(1 for m, _ in space.edges() if m == n))
                    )
                    for n in space.node_ids()
                }
            )
            for group, _ in space.alpha_groups()
        }
    )


def node_softmax(params: nn.ParameterDict, space: SpaceConfig) -> Tensor:
    """Edge-normalisation weights of one group (:func:`edge_norm_parameters`): each node's softmax over its
    incoming edges, concatenated in ``space.edges()`` order along the last dim."""
    return torch.cat([torch.softmax(params[f"node{n}"], dim=-1) for n in space.node_ids()], dim=-1)


class Supernet(nn.Module):
    """Base class: architecture weights, the mixing function and the parameter split.

    Subclasses build the body and implement ``forward_body(x, weights)`` where ``weights`` maps each
    alpha group to its ``[num_edges, num_ops]`` mixing weights.
    Every subclass takes ``(space, num_classes, in_channels, share_param_free, *, image_size,
    partial_channels, edge_norm, layout)``; an option its kind has no use for keeps its default (cell
    supernets ignore ``image_size``), so :func:`build_supernet` builds any kind's class the same way.
    ``layout`` (:data:`~pflnas.options.SUPERNET_LAYOUTS`, None: from ``share_param_free``) overrides
    ``share_param_free``; ``batched`` is for classes with ``batched_layout``.
    """

    batched_layout = False  # the class builds the batched layout (see pflnas.supernet.batched)

    def __init__(
        self,
        space: SpaceConfig,
        share_param_free: bool = True,
        edge_norm: bool = False,
        layout: str | None = None,
    ):
        super().__init__()
        self.space = space
        self.layout = resolve_layout(share_param_free, layout)
        if self.layout == "batched" and not self.batched_layout:
            raise ConfigError(f"space.layout=batched is not available for {space.kind} spaces yet")
        self.share_param_free = self.layout != "per_edge"
        # PC-DARTS edge normalisation: per node, weights over its incoming edges (``cell3.node2``)
        self.edge_norm: nn.ModuleDict | None = None
        if edge_norm:
            if space.is_block:
                raise ConfigError(f"edge normalisation needs a cell space; {space.name!r} is a block space")
            self.edge_norm = edge_norm_parameters(space)
        self.arch = nn.ModuleDict(
            {
                group: nn.ParameterDict(
                    {
                        key: nn.Parameter(1e-3 * torch.randn(len(space.group_ops(group))))
                        for key in space.choice_keys()
                    }
                )
                for group, _ in space.alpha_groups()
            }
        )
        self.mixing: Mixing = softmax_mixing
        self.single_path = False

    # --- architecture weights ---------------------------------------------------------------------
    def named_arch_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(label, parameter)`` for every edge, e.g. ``('cell3.edge2<-0', Parameter[num_ops])``."""
        for group, params in self.arch.items():
            for key, p in params.items():
                yield f"{group}.{key}", p

    def arch_parameters(self) -> list[nn.Parameter]:
        """Every architecture parameter: the alphas and, with edge normalisation, the edge weights."""
        alphas = [p for _, p in self.named_arch_parameters()]
        if self.edge_norm is None:
            return alphas
        return alphas + [p for params in self.edge_norm.values() for p in params.values()]

    def edge_scales(self, group: str) -> Tensor | None:
        """``[num_edges]`` edge-normalisation weights of ``group`` in ``space.edges()`` order, or None."""
        if self.edge_norm is None:
            return None
        return node_softmax(self.edge_norm[group], self.space)

    @torch.no_grad()
    def edge_strengths(self) -> dict[str, float]:
        """``{edge label: normalisation weight}`` (empty without edge normalisation)."""
        if self.edge_norm is None:
            return {}
        out = {}
        for group in self.edge_norm:
            scales = self.edge_scales(group)
            assert scales is not None
            for (n, src), w in zip(self.space.edges(), scales.float().tolist()):
                out[f"{group}.{edge_key(n, src)}"] = w
        return out

    def weight_parameters(self) -> list[nn.Parameter]:
        arch_ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch_ids]

    # --- seeds: one here; a grouped supernet (pflnas.supernet.grouped) holds N with the same hooks ---
    def seed_norms(self, tensors: Sequence[Tensor]) -> Tensor:
        """The 2-norm over ``tensors`` (one per weight or alpha, shaped like it), per seed the module
        holds: one seed here, so a 0-d tensor (second-order DARTS' finite-difference step size)."""
        return torch.cat([t.reshape(-1) for t in tensors]).norm()

    def per_seed(self, values: Tensor, like: Tensor) -> Tensor:
        """``values`` (one per seed, as :meth:`seed_norms` gives) broadcastable against ``like``."""
        return values

    def clip_weight_grads(self, max_norm: float) -> Tensor:
        """Clip the weight gradients as ``clip_grad_norm_`` does, per seed; returns the norms before."""
        return nn.utils.clip_grad_norm_(self.weight_parameters(), max_norm)

    def alpha_matrix(self, group: str) -> Tensor:
        """``[num_choices, num_ops]`` alphas of ``group`` in ``space.choice_keys()`` order."""
        return torch.stack(list(self.arch[group].values()))

    def edge_weights(self) -> dict[str, Tensor]:
        """Mixing weights per group; with edge normalisation each edge's row is scaled by its weight
        (sum_e b_e sum_o a_eo op(x) = sum_e sum_o (b_e a_eo) op(x))."""
        out = {}
        for group in self.arch:
            w = self.mixing(self.alpha_matrix(group))
            scales = self.edge_scales(group)
            out[group] = w if scales is None else w * scales.to(w.dtype).unsqueeze(-1)
        return out

    @torch.no_grad()
    def probabilities(self) -> dict[str, dict[str, float]]:
        """Softmax of the alphas: ``{label: {op: probability}}`` over each choice's candidates."""
        out = {}
        for group, params in self.arch.items():
            ops = self.space.group_ops(group)
            for key, p in params.items():
                out[f"{group}.{key}"] = dict(zip(ops, torch.softmax(p.detach().float(), dim=-1).tolist()))
        return out

    def set_mixing(self, mixing: Mixing, single_path: bool = False) -> None:
        """Set how alphas become mixing weights (softmax for DARTS; strategies may change it).

        ``single_path``: the mixing returns hard one-hot weights (valued 0/1, with straight-through
        gradients) and only the selected op of every edge or block runs, as in GDAS; this costs one
        host sync per forward to read the selection.
        """
        if single_path and self.layout == "batched":
            raise ConfigError("single-path strategies do not run on space.layout=batched; use per_source")
        self.mixing = mixing
        self.single_path = single_path
        if not single_path:
            self.set_active(None)

    def set_active(self, active: dict[str, list[int]] | None) -> None:
        """Tell every mixed module which op to run (``{group: [op index per choice]}``), or all (None)."""
        if active is not None:
            raise NotImplementedError(f"{type(self).__name__} has no single-path forward")

    def forward(self, x: Tensor) -> Tensor:
        weights = self.edge_weights()
        if self.single_path:
            groups = list(weights)
            picks = torch.cat([weights[g].argmax(-1) for g in groups]).tolist()  # the one host sync
            active, start = {}, 0
            for g in groups:
                n = weights[g].shape[0]
                active[g], start = picks[start : start + n], start + n
            self.set_active(active)
        return self.forward_body(x, weights)

    def forward_body(self, x: Tensor, weights: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError


class CellSupernet(Supernet):
    """A supernet of search cells: ``self.cells`` and, per cell, the alpha group it reads in
    ``self.groups`` (``None`` for fixed blocks between cells)."""

    cells: nn.ModuleList
    groups: list[str | None]

    def set_active(self, active: dict[str, list[int]] | None) -> None:
        for cell, group in zip(self.cells, self.groups):
            if group is not None:
                cell.active = None if active is None else active[group]


class DartsSupernet(CellSupernet):
    """DARTS ``model_search.Network``: stem, ``layers`` cells with reductions at 1/3 and 2/3, classifier.

    ``partial_channels`` > 1 and ``edge_norm`` give PC-DARTS' supernet (partial channel connections with
    channel shuffle, edge normalisation). ``layout="batched"``: see :mod:`pflnas.supernet.batched`.
    """

    batched_layout = True

    def __init__(
        self,
        space: SpaceConfig,
        num_classes: int,
        in_channels: int = 3,
        share_param_free: bool = True,
        *,
        image_size: int = 32,
        partial_channels: int = 1,
        edge_norm: bool = False,
        layout: str | None = None,
    ):
        super().__init__(space, share_param_free, edge_norm, layout)
        _check_partial(space, partial_channels)
        c = space.init_channels
        c_stem = space.stem_multiplier * c
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem)
        )
        c_pp, c_p, c_cur = c_stem, c_stem, c
        reductions = space.reduction_layers()
        self.cells = nn.ModuleList()
        self.groups = []
        reduction_prev = False
        for i in range(space.layers):
            reduction = i in reductions
            if reduction:
                c_cur *= 2
            self.cells.append(
                DartsSearchCell(
                    space,
                    c_pp,
                    c_p,
                    c_cur,
                    reduction,
                    reduction_prev,
                    self.share_param_free,
                    partial_channels,
                    batched=self.layout == "batched",
                )
            )
            self.groups.append(space.group_of_cell(i))
            reduction_prev = reduction
            c_pp, c_p = c_p, space.nodes * c_cur
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward_body(self, x: Tensor, weights: dict[str, Tensor]) -> Tensor:
        s0 = s1 = self.stem(x)
        for cell, group in zip(self.cells, self.groups):
            s0, s1 = s1, cell(s0, s1, weights[group])
        return self.classifier(self.global_pool(s1).flatten(1))


class NB201Supernet(CellSupernet):
    """The NAS-Bench-201 skeleton: stem, 3 stages of ``layers`` cells (C, 2C, 4C) joined by residual
    reduction blocks, BN-ReLU, global pool, classifier. ``layout="batched"``: see
    :mod:`pflnas.supernet.batched` (every NB201 candidate that has parameters is a ReLU-Conv-BN)."""

    batched_layout = True

    def __init__(
        self,
        space: SpaceConfig,
        num_classes: int,
        in_channels: int = 3,
        share_param_free: bool = True,
        *,
        image_size: int = 32,
        partial_channels: int = 1,
        edge_norm: bool = False,
        layout: str | None = None,
    ):
        super().__init__(space, share_param_free, edge_norm, layout)
        _check_partial(space, partial_channels)
        c = space.init_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.cells = nn.ModuleList()
        self.groups = []
        c_prev, index = c, 0
        for stage in range(3):
            c_stage = c * 2**stage
            if stage > 0:
                self.cells.append(ResNetBasicBlock(c_prev, c_stage, 2))
                self.groups.append(None)
            for _ in range(space.layers):
                self.cells.append(
                    NB201SearchCell(
                        space, c_stage, self.share_param_free, partial_channels, self.layout == "batched"
                    )
                )
                self.groups.append(space.group_of_cell(index))
                index += 1
            c_prev = c_stage
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward_body(self, x: Tensor, weights: dict[str, Tensor]) -> Tensor:
        x = self.stem(x)
        for cell, group in zip(self.cells, self.groups):
            x = cell(x) if group is None else cell(x, weights[group])
        return self.classifier(self.global_pool(self.lastact(x)).flatten(1))


class BlockSupernet(Supernet):
    """A block space's skeleton (ResNet, ViT or PiT) whose every slot is a :class:`MixedOp` over the
    candidates valid at that block's stride; block ``i`` reads the weights of its alpha group."""

    def __init__(
        self,
        space: SpaceConfig,
        num_classes: int,
        in_channels: int = 3,
        share_param_free: bool = True,
        *,
        image_size: int = 32,
        partial_channels: int = 1,
        edge_norm: bool = False,
        layout: str | None = None,
    ):
        check_supernet_options(space, partial_channels, edge_norm, layout)
        super().__init__(space, share_param_free, edge_norm, layout)
        self.block_groups = [space.group_of_block(s.index) for s in space.sites()]

        def slot(site: BlockSite, channels: int, heads: int) -> nn.Module:
            return MixedOp(space.ops_at(site.stride), channels, site.stride, space.context, heads)

        kind = space.kind_spec
        assert isinstance(kind, BlockKind)
        self.body = kind.body_class()(space.skeleton_config(), slot, num_classes, in_channels, image_size)  # type: ignore[call-arg]

    def set_active(self, active: dict[str, list[int]] | None) -> None:
        for block, group in zip(self.body.blocks, self.block_groups):
            slot = block.spatial if hasattr(block, "spatial") else block.mixer
            slot.active = None if active is None else active[group][0]

    def forward_body(self, x: Tensor, weights: dict[str, Tensor]) -> Tensor:
        return self.body(x, [weights[g][0] for g in self.block_groups])


def _check_partial(space: SpaceConfig, partial: int) -> None:
    if partial < 1 or space.init_channels % partial:
        raise ConfigError(
            f"partial channel connections with K={partial} need init_channels divisible by {partial} "
            f"(space {space.name!r} has {space.init_channels})"
        )


def check_supernet_options(
    space: SpaceConfig, partial_channels: int = 1, edge_norm: bool = False, layout: str | None = None
) -> None:
    """Raise ConfigError unless ``space`` takes these supernet options (cheap: run it before the data)."""
    batched = resolve_layout(True, layout) == "batched"
    if batched and not space.kind_spec.supernet_class().batched_layout:  # the kind's supernet says
        raise ConfigError(
            f"space.layout=batched is for cell spaces (DARTS and NAS-Bench-201 cells); {space.name!r} "
            f"is a {space.kind} space"
        )
    if space.is_block and (partial_channels != 1 or edge_norm):
        raise ConfigError(
            "partial channels and edge normalisation (PC-DARTS) are for cell spaces; "
            f"{space.name!r} is a block space"
        )
    if not space.is_block:
        _check_partial(space, partial_channels)


def build_supernet(
    space: SpaceConfig,
    num_classes: int,
    in_channels: int = 3,
    share_param_free: bool = True,
    image_size: int = 32,
    partial_channels: int = 1,
    edge_norm: bool = False,
    layout: str | None = None,
) -> Supernet:
    """The supernet of ``space``; ``image_size`` picks a block space's stem (cell spaces ignore it).

    ``partial_channels`` / ``edge_norm``: PC-DARTS' supernet (cell spaces only). Checks the options first;
    a caller that checked them itself (before loading data) builds with :func:`construct_supernet`."""
    check_supernet_options(space, partial_channels, edge_norm, layout)
    return construct_supernet(
        space, num_classes, in_channels, share_param_free, image_size, partial_channels, edge_norm, layout
    )


def construct_supernet(
    space: SpaceConfig,
    num_classes: int,
    in_channels: int = 3,
    share_param_free: bool = True,
    image_size: int = 32,
    partial_channels: int = 1,
    edge_norm: bool = False,
    layout: str | None = None,
) -> Supernet:
    """:func:`build_supernet` for options already passed through :func:`check_supernet_options`."""
    cls = space.kind_spec.supernet_class()
    return cls(  # type: ignore[no-any-return]
        space,
        num_classes,
        in_channels,
        share_param_free,
        image_size=image_size,
        partial_channels=partial_channels,
        edge_norm=edge_norm,
        layout=layout,
    )
