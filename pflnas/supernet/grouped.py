"""N independent cell supernets (DARTS or NAS-Bench-201 cells) folded into one grouped network: N seeds'
searches, one set of kernels.

N seeds search the same space with separate weights, alphas and batches. Every op of a DARTS or NB201 cell,
and of NB201's residual reduction blocks, acts on each channel's group alone (a conv with ``groups``, a
per-channel BatchNorm, a pool, a sum), so the N supernets stack as channel groups of one network: tensors
are ``[B, N*C, H, W]`` seed-major (channels ``[s*C, (s+1)*C)`` are seed s's), a ``C_in -> C_out`` conv with
``g`` groups becomes ``N*C_in -> N*C_out`` with ``N*g`` groups, a BatchNorm over C channels one over N*C
(per-channel statistics: N separate BatchNorms), and the classifier a batched contraction. Each of the
supernet's kernels then runs once for all seeds. PC-DARTS' partial channels stay within a seed's block too:
its ops see the first C/K channels of the block, the rest bypass them, and the channel shuffle permutes the
block (:func:`seed_channels`, :class:`GroupedEdge`).

Every grouped tensor holds seed s's numbers in the s-th of N equal blocks along dim 0 (:func:`seed_blocks`);
:mod:`pflnas.supernet.grouped_state` converts states and handles per-seed gradients on that one rule. The
module names are those of the ``per_source`` supernet of the space's kind, so the state_dict keys match it
except the classifier and the alphas (one ``[N, num_edges, num_ops]`` per group); PC-DARTS'
edge-normalisation parameters keep their per-seed keys with a leading seed dim.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pflnas.errors import ConfigError
from pflnas.ops import get_op
from pflnas.ops.primitives import FactorizedReduce
from pflnas.spaces.config import SpaceConfig
from pflnas.spaces.labels import edge_key
from pflnas.supernet.cells import DartsSearchCell, SearchCell
from pflnas.supernet.mixed import MixedEdge, reassemble_partial
from pflnas.supernet.network import (
    CellSupernet,
    Mixing,
    build_supernet,
    edge_norm_parameters,
    node_softmax,
    softmax_mixing,
)


def seed_blocks(t: Tensor, seeds: int) -> Tensor:
    """``[N, -1]``: row s holds seed s's entries of the grouped tensor ``t`` (dim 0 in N equal blocks)."""
    return t.reshape(seeds, -1)


def seed_channels(x: Tensor, seeds: int, part: int) -> Tensor:
    """``[B, N*part, H, W]``: the first ``part`` channels of each seed's block of ``x`` (``[B, N*C, H, W]``),
    what PC-DARTS' ops of each seed see."""
    b, _, h, w = x.shape
    return x.view(b, seeds, -1, h, w)[:, :, :part].reshape(b, seeds * part, h, w)


def _grouped_conv(conv: nn.Conv2d, n: int) -> nn.Conv2d:
    if conv.bias is not None or conv.padding_mode != "zeros":
        raise ConfigError("grouped supernets take bias-free, zero-padded convs (DARTS cells' convs)")
    return nn.Conv2d(
        n * conv.in_channels,
        n * conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        conv.dilation,  # type: ignore[arg-type]
        groups=n * conv.groups,
        bias=False,
    )


def _grouped_bn(bn: nn.BatchNorm2d, n: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(
        n * bn.num_features,
        bn.eps,
        bn.momentum,
        bn.affine,
        bn.track_running_stats,  # type: ignore[arg-type]
    )


class GroupedFactorizedReduce(nn.Module):
    """N :class:`FactorizedReduce`: each seed's block is its own two halves (``conv_1``'s then ``conv_2``'s),
    so the halves interleave by seed before the BatchNorm. Same child names as the per-seed module."""

    def __init__(self, proto: FactorizedReduce, n: int):
        super().__init__()
        self.n = n
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = _grouped_conv(proto.conv_1, n)
        self.conv_2 = _grouped_conv(proto.conv_2, n)
        self.bn = _grouped_bn(proto.bn, n)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        shifted = nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        a, b = self.conv_1(x), self.conv_2(shifted)
        batch, _, h, w = a.shape
        y = torch.cat([a.view(batch, self.n, -1, h, w), b.view(batch, self.n, -1, h, w)], dim=2)
        return self.bn(y.view(batch, -1, h, w))


def group_module(module: nn.Module, n: int) -> nn.Module:
    """The grouped form of a per-seed module for ``n`` seeds, with the same child names (so the same
    state_dict keys). Convs and BatchNorms are widened by seed; stateless layers (ReLU, pools, identity)
    act per channel and are kept; anything else that holds a tensor has no grouped form."""
    if isinstance(module, nn.Conv2d):
        return _grouped_conv(module, n)
    if isinstance(module, nn.BatchNorm2d):
        return _grouped_bn(module, n)
    if isinstance(module, FactorizedReduce):
        return GroupedFactorizedReduce(module, n)
    own = [k for k, _ in module.named_parameters(recurse=False)]
    own += [k for k, _ in module.named_buffers(recurse=False)]
    if own or isinstance(module, nn.Linear):
        raise ConfigError(f"{type(module).__name__} has no grouped form (it holds {', '.join(own)})")
    clone = copy.deepcopy(module)  # a container: the same class, its children replaced by grouped ones
    for name, child in module.named_children():
        setattr(clone, name, group_module(child, n))
    return clone


class GroupedEdge(nn.Module):
    """N :class:`MixedEdge` (dense mixing): ``[B, N, C, H, W]``, each seed's weighted sum over the ops.

    With PC-DARTS' partial channels (``partial`` K > 1) the ops run on the first C/K channels of each seed's
    block and each seed's block is then reassembled as :class:`MixedEdge` does it: the fold ``[B*N, C, H, W]``
    makes every seed a sample of the per-seed :func:`~pflnas.supernet.mixed.reassemble_partial`."""

    def __init__(self, edge: MixedEdge, n: int):
        super().__init__()
        if edge.own_free is not None:
            raise ConfigError("grouped supernets need the per_source layout (parameter-free ops per source)")
        self.n, self.partial = n, edge.partial
        self.terms = [(i, name) for i, name in enumerate(edge.names) if not get_op(name).is_zero]
        self.trainable = nn.ModuleDict({k: group_module(m, n) for k, m in edge.trainable.items()})
        self.bypass = None if edge.bypass is None else group_module(edge.bypass, n)

    def forward(self, x: Tensor, part: Tensor, weights: Tensor, free: dict[str, Tensor]) -> Tensor:
        """``x``: the source, ``[B, N*C, H, W]``; ``part``: its ops' input (:func:`seed_channels`, or ``x``
        itself without partial channels); ``weights``: ``[N, num_ops]``; ``free``: the source's
        parameter-free outputs of ``part``."""
        out: Tensor | None = None
        for i, name in self.terms:
            y = free[name] if name in free else self.trainable[name](part)
            y = y.view(y.shape[0], self.n, -1, *y.shape[2:])
            w = weights[:, i].view(1, self.n, 1, 1, 1)
            out = y * w if out is None else torch.addcmul(out, y, w)
        assert out is not None
        if self.partial == 1:
            return out
        b, h, w = x.shape[0], x.shape[2], x.shape[3]
        folded = reassemble_partial(
            x.view(b * self.n, -1, h, w), out.flatten(0, 1), self.partial, self.bypass
        )
        return folded.view(b, self.n, *folded.shape[1:])


class GroupedSearchCell(nn.Module):
    """N per_source :class:`SearchCell`: the edges and the node DAG, with the parameter-free ops once per
    source node (on each seed's first C/K channels with partial channels), as
    :meth:`SearchCell.forward_nodes` runs them. The cell kinds add their inputs and output around it."""

    def __init__(self, cell: SearchCell, n: int):
        super().__init__()
        self.n, self.space, self.edge_list, self.part = n, cell.space, cell.edge_list, cell.part
        self.partial = next(iter(cell.edges.values())).partial  # type: ignore[union-attr]
        self.edges = nn.ModuleDict({k: GroupedEdge(e, n) for k, e in cell.edges.items()})  # type: ignore[arg-type]
        self.source_ops = group_module(cell.source_ops, n)

    def forward_nodes(self, states: list[Tensor], weights: Tensor) -> list[Tensor]:
        """``states``: the cell's inputs; returns them followed by every node. ``weights``: ``[N, num_edges,
        num_ops]`` in ``space.edges()`` order."""
        states = list(states)
        free: dict[int, dict[str, Tensor]] = {}
        parts: dict[int, Tensor] = {}
        index = 0
        for node in self.space.node_ids():
            total: Tensor | None = None
            for src in range(node):
                if src not in free:
                    x = states[src]
                    parts[src] = x if self.partial == 1 else seed_channels(x, self.n, self.part)
                    free[src] = self.source_ops[str(src)](parts[src])
                y = self.edges[edge_key(node, src)](states[src], parts[src], weights[:, index], free[src])
                total = y if total is None else total + y
                index += 1
            assert total is not None
            states.append(total.flatten(1, 2))
        return states


class GroupedDartsCell(GroupedSearchCell):
    """N :class:`DartsSearchCell`: preprocessing of both inputs, the DAG, and the seed-major concatenation
    of the output nodes."""

    def __init__(self, cell: DartsSearchCell, n: int):
        super().__init__(cell, n)
        self.preprocess0 = group_module(cell.preprocess0, n)
        self.preprocess1 = group_module(cell.preprocess1, n)

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        states = self.forward_nodes([self.preprocess0(s0), self.preprocess1(s1)], weights)
        b, _, h, w = states[-1].shape
        out = torch.cat([states[i].view(b, self.n, -1, h, w) for i in self.space.concat()], dim=2)
        return out.view(b, -1, h, w)


class GroupedNB201Cell(GroupedSearchCell):
    """N :class:`NB201SearchCell`: one input, the last node out (already seed-major: one node's channels)."""

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        return self.forward_nodes([x], weights)[-1]


class GroupedSupernet(nn.Module):
    """``seeds`` per_source cell supernets of ``space`` (dense softmax mixing) as one network.

    ``GroupedSupernet(space, ...)`` builds the grouped form of the space's kind (:func:`grouped_form`:
    :class:`GroupedDartsSupernet`, :class:`GroupedNB201Supernet`), so callers need not know kinds; the form
    groups the per-seed skeleton (``group_body``) and pools its features (``forward_body``), this class
    holds what every form shares: the alphas, the classifier and the per-seed hooks.

    ``forward(x)``: ``x`` ``[N, B, C_in, H, W]`` (seed s's batch at ``x[s]``) -> logits ``[N, B, classes]``.
    Alphas: ``arch[group]`` of shape ``[N, num_choices, num_ops]`` (choices in ``space.choice_keys()``
    order); optimizers are elementwise, so one optimizer over the grouped parameters steps every seed as
    its own optimizer would. :mod:`pflnas.supernet.grouped_state` converts to and from per-seed states.

    ``partial_channels`` and ``edge_norm``: PC-DARTS' supernet, as :func:`build_supernet` takes them. The
    edge-normalisation parameters are ``edge_norm[group][f"node{n}"]`` of shape ``[N, edges into node n]``
    (seed s's row is the per-seed parameter of the same key); they scale the mixing weights as
    :meth:`Supernet.edge_weights` does and follow the alphas in :meth:`arch_parameters`.
    """

    def __new__(cls, space: SpaceConfig | None = None, *args: object, **kwargs: object) -> GroupedSupernet:
        """The kind dispatch: ``GroupedSupernet(space, ...)`` is an instance of the space's form (copies and
        unpickling call this with no arguments on the form itself)."""
        form = grouped_form(space) if cls is GroupedSupernet and space is not None else cls
        return super().__new__(form)

    def __init__(
        self,
        space: SpaceConfig,
        num_classes: int,
        seeds: int,
        in_channels: int = 3,
        *,
        partial_channels: int = 1,
        edge_norm: bool = False,
    ):
        super().__init__()
        if type(self) is not grouped_form(space):
            raise ConfigError(f"{type(self).__name__} is not the grouped form of {space.kind} spaces")
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ConfigError(f"a grouped supernet needs a positive whole number of seeds, got {seeds!r}")
        proto = build_supernet(
            space,
            num_classes,
            in_channels,
            layout="per_source",
            partial_channels=partial_channels,
            edge_norm=edge_norm,
        )
        assert isinstance(proto, CellSupernet)
        self.space, self.seeds, self.groups = space, seeds, list(proto.groups)
        self.stem = group_module(proto.stem, seeds)
        self.group_body(proto)
        c_final = proto.classifier.in_features
        bound = 1 / math.sqrt(c_final)  # nn.Linear's default initialisation, per seed
        self.classifier = nn.ParameterDict(
            {
                "weight": nn.Parameter(torch.empty(seeds, num_classes, c_final).uniform_(-bound, bound)),
                "bias": nn.Parameter(torch.empty(seeds, num_classes).uniform_(-bound, bound)),
            }
        )
        shape = (seeds, len(space.choice_keys()))
        self.arch = nn.ParameterDict(
            {
                g: nn.Parameter(1e-3 * torch.randn(*shape, len(space.group_ops(g))))
                for g, _ in space.alpha_groups()
            }
        )
        self.edge_norm = edge_norm_parameters(space, seeds) if edge_norm else None

    def group_body(self, proto: CellSupernet) -> None:
        """Register the grouped forms of ``proto``'s modules between its stem and its classifier, under
        the same names (so the same state_dict keys)."""
        raise NotImplementedError

    def forward_body(self, x: Tensor, weights: dict[str, Tensor]) -> Tensor:
        """``x``: the stem's output ``[B, N*C, H, W]``; returns the pooled features ``[B, N*C_final]``."""
        raise NotImplementedError

    def arch_parameters(self) -> list[nn.Parameter]:
        """The alphas and, with edge normalisation, the edge weights (the order :class:`Supernet` uses)."""
        alphas = list(self.arch.values())
        if self.edge_norm is None:
            return alphas
        return alphas + [p for params in self.edge_norm.values() for p in params.values()]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch_ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch_ids]

    def edge_scales(self, group: str) -> Tensor | None:
        """``[N, num_edges]`` edge-normalisation weights of ``group`` in ``space.edges()`` order, or None."""
        return None if self.edge_norm is None else node_softmax(self.edge_norm[group], self.space)

    def edge_weights(self) -> dict[str, Tensor]:
        """DARTS' softmax mixing weights per group, ``[N, num_choices, num_ops]``; with edge normalisation
        each edge's row is scaled by its weight, as :meth:`Supernet.edge_weights` does."""
        out = {}
        for g, a in self.arch.items():
            w = softmax_mixing(a)
            scales = self.edge_scales(g)
            out[g] = w if scales is None else w * scales.to(w.dtype).unsqueeze(-1)
        return out

    def set_mixing(self, mixing: Mixing, single_path: bool = False) -> None:
        """What :meth:`Strategy.attach` calls: a grouped supernet mixes by softmax only (dense DARTS and
        PC-DARTS); any other mixing, or a single path, is refused."""
        if mixing is not softmax_mixing or single_path:
            raise ConfigError("grouped supernets mix by softmax only (darts, darts2, pcdarts), densely")

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[0] != self.seeds:
            raise ConfigError(
                f"a grouped supernet takes [{self.seeds}, B, C, H, W] inputs, got {list(x.shape)}"
            )
        n, b = x.shape[:2]
        stem = self.stem(x.transpose(0, 1).reshape(b, -1, *x.shape[3:]))
        pooled = self.forward_body(stem, self.edge_weights()).view(b, n, -1)
        logits = torch.einsum("bnc,nkc->nbk", pooled, self.classifier["weight"])
        return logits + self.classifier["bias"].unsqueeze(1)

    # --- the hooks the step and the strategies use per seed (a plain Supernet holds one seed) -------------
    def seed_norms(self, tensors: Sequence[Tensor]) -> Tensor:
        """``[N]``: each seed's 2-norm over ``tensors`` (shaped like the weights or alphas)."""
        squares = [seed_blocks(t, self.seeds).square().sum(1) for t in tensors]
        return torch.stack(squares).sum(0).sqrt()

    def per_seed(self, values: Tensor, like: Tensor) -> Tensor:
        """``values`` (``[N]``) expanded over each seed's block of ``like``, broadcastable against it."""
        rows = values.to(like.dtype).repeat_interleave(like.shape[0] // self.seeds)
        return rows.view(-1, *([1] * (like.dim() - 1)))

    @torch.no_grad()
    def weight_grad_norms(self) -> Tensor:
        """``[N]``: the norm ``clip_grad_norm_`` would compute on each seed's separate supernet."""
        grads = [p.grad for p in self.weight_parameters() if p.grad is not None]
        return self.seed_norms(grads) if grads else torch.zeros(self.seeds)

    @torch.no_grad()
    def clip_weight_grads(self, max_norm: float) -> Tensor:
        """Scale each seed's weight gradients as ``clip_grad_norm_(max_norm)`` scales its own search's
        (``min(1, max_norm / (norm + 1e-6))``); returns the ``[N]`` norms before clipping."""
        if not max_norm > 0:
            raise ConfigError(f"the gradient clipping norm must be positive, got {max_norm}")
        norms = self.weight_grad_norms()
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for p in self.weight_parameters():
            if p.grad is not None:
                p.grad.mul_(self.per_seed(coef, p.grad))
        return norms


class GroupedDartsSupernet(GroupedSupernet):
    """N :class:`DartsSupernet` (darts_cell kind): the cells, each reading the two before it."""

    def group_body(self, proto: CellSupernet) -> None:
        self.cells = nn.ModuleList(GroupedDartsCell(c, self.seeds) for c in proto.cells)  # type: ignore[arg-type]

    def forward_body(self, x: Tensor, weights: dict[str, Tensor]) -> Tensor:
        s0 = s1 = x
        for cell, group in zip(self.cells, self.groups):
            s0, s1 = s1, cell(s0, s1, weights[group])
        return s1.mean((2, 3))  # global average pool, per channel


class GroupedNB201Supernet(GroupedSupernet):
    """N :class:`NB201Supernet` (nb201_cell kind): search cells, the residual reduction blocks between the
    stages (:func:`group_module`: their convs, BatchNorms, pool and residual sum all act per channel group),
    and the BN-ReLU head."""

    def group_body(self, proto: CellSupernet) -> None:
        n = self.seeds
        self.cells = nn.ModuleList(
            group_module(c, n) if g is None else GroupedNB201Cell(c, n)  # type: ignore[arg-type]
            for c, g in zip(proto.cells, proto.groups)
        )
        self.lastact = group_module(proto.lastact, n)

    def forward_body(self, x: Tensor, weights: dict[str, Tensor]) -> Tensor:
        for cell, group in zip(self.cells, self.groups):
            x = cell(x) if group is None else cell(x, weights[group])
        return self.lastact(x).mean((2, 3))


GROUPED_FORMS: dict[str, type[GroupedSupernet]] = {
    "darts_cell": GroupedDartsSupernet,
    "nb201_cell": GroupedNB201Supernet,
}


def grouped_form(space: SpaceConfig) -> type[GroupedSupernet]:
    """The grouped supernet class of ``space``'s kind; a one-line ConfigError for kinds without one."""
    form = GROUPED_FORMS.get(space.kind)
    if form is None:
        kinds = " and ".join(GROUPED_FORMS)
        raise ConfigError(f"grouped supernets are for {kinds} spaces; {space.name!r} is {space.kind}")
    return form
