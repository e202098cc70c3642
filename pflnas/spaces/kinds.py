"""One object per kind of search space: what the ``kind:`` of a space fixes, answered in one place.

A space's kind decides its reduction layers, how many cells or blocks it has, the stage of each, how alpha
groups are formed, which supernet searches it and how its derived network is shaped. Asking the kind object
replaces branches on the kind's name spread over the code. It stays torch-free: the supernet and the block
network bodies are named ``"module:Class"`` and imported when first built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pflnas.spaces.labels import BLOCK_CHOICE, edge_key
from pflnas.spaces.skeletons import OpSite, PiTSkeleton, ResNetSkeleton, ViTSkeleton

if TYPE_CHECKING:
    from pflnas.spaces.config import SpaceConfig

NORMAL, REDUCE = "normal", "reduce"


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class SpaceKind:
    """The structure shared by every space of one kind.

    ``context``: the op context the candidates are built in; ``unit``: the prefix of individual alpha
    groups (``cell3``, ``block3``); ``supernet``: the supernet class as ``"module:Class"``. Shared alpha
    groups are one per type of cell/block present (``normal``, ``reduce``) unless ``shared_group`` names
    the single group every cell reads. ``layers`` arguments default to the space's own.
    """

    name: str
    context: str
    unit: str
    supernet: str
    shared_group: str | None = None

    @property
    def is_block(self) -> bool:
        return self.context != "cell"

    def count(self, space: SpaceConfig, layers: int | None = None) -> int:
        """How many searchable cells or blocks the search network has."""
        raise NotImplementedError

    def reduction_layers(self, space: SpaceConfig, layers: int | None = None) -> tuple[int, ...]:
        """Indices of the searchable cells/blocks that reduce (run their input ops at stride 2)."""
        raise NotImplementedError

    def stage(self, space: SpaceConfig, index: int, layers: int | None = None) -> int:
        """How many reductions of the network come before or at cell/block ``index``."""
        raise NotImplementedError

    def types(self, space: SpaceConfig, layers: int | None = None) -> list[str]:
        """``normal`` / ``reduce`` of every searchable cell or block, in network order."""
        reductions = self.reduction_layers(space, layers)
        return [REDUCE if i in reductions else NORMAL for i in range(self.count(space, layers))]

    def alpha_groups(self, space: SpaceConfig) -> list[tuple[str, str]]:
        """``(group name, type)`` of every alpha group: one per cell/block, or shared (see the class)."""
        types = self.types(space)
        if space.alpha_mode == "individual":
            return [(f"{self.unit}{i}", t) for i, t in enumerate(types)]
        if self.shared_group is not None:
            return [(self.shared_group, NORMAL)]
        return [(t, t) for t in (NORMAL, REDUCE) if t in types]

    def group_of(self, space: SpaceConfig, index: int) -> str:
        """The alpha group that cell/block ``index`` of the search network reads."""
        if space.alpha_mode == "individual":
            return f"{self.unit}{index}"
        return self.shared_group or self.types(space)[index]

    def choice_keys(self, space: SpaceConfig) -> list[str]:
        """The choices inside one alpha group (a cell's edges, a block's op slot)."""
        raise NotImplementedError

    def group_ops(self, space: SpaceConfig, group: str) -> tuple[str, ...]:
        """The candidates of every choice in alpha group ``group``."""
        raise NotImplementedError

    def op_sites(self, space: SpaceConfig, image_size: int) -> list[OpSite]:
        """Where candidate ops run in the search network, per stage and stride."""
        raise NotImplementedError

    def network_shape(self, space: SpaceConfig) -> tuple[int, int] | None:
        """``(first width, depth)`` when the space fixes its derived network's shape, else None."""
        return None

    def supernet_class(self) -> type:
        return _resolve(self.supernet)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class CellKind(SpaceKind):
    """Cells of ``inputs`` input nodes whose output is the ``concat`` of the intermediate nodes or the
    ``last`` one; a derived cell keeps ``keep_edges`` incoming edges per node (None: every edge)."""

    inputs: int = 1
    output: str = "last"
    keep_edges: int | None = None
    min_layers: int = 1

    def choice_keys(self, space: SpaceConfig) -> list[str]:
        return [edge_key(n, s) for n, s in space.edges()]

    def group_ops(self, space: SpaceConfig, group: str) -> tuple[str, ...]:
        return space.ops  # a cell mixes edges of both strides; each edge builds the ops valid at its own

    def op_sites(self, space: SpaceConfig, image_size: int) -> list[OpSite]:
        """Stage ``s`` has ``init_channels * 2**s`` channels at ``image_size / 2**s`` (DARTS and NB201 stems
        keep the input size); a reduction cell runs its input edges at stride 2 on the previous stage's
        resolution. ``blocks`` counts the edges that run the op at that site."""
        sizes = [image_size]
        for _ in range(2):
            sizes.append(-(-sizes[-1] // 2))
        c = space.init_channels
        types = self.types(space)
        stage_of = [self.stage(space, i) for i in range(len(types))]
        per_cell = len(space.edges())
        strided = sum(1 for _, src in space.edges() if src < self.inputs)  # per reduction cell
        out = []
        for stage in range(3):
            cells = [i for i, st in enumerate(stage_of) if st == stage]
            normal = sum(types[i] == NORMAL for i in cells) * per_cell
            reduce = sum(types[i] == REDUCE for i in cells)
            if reduce:
                before = sizes[stage - 1]
                out.append(OpSite(stage, 2, c * 2**stage, before, before, blocks=reduce * strided))
                normal += reduce * (per_cell - strided)
            if normal:
                out.append(OpSite(stage, 1, c * 2**stage, sizes[stage], sizes[stage], blocks=normal))
        return out


@dataclass(frozen=True)
class DartsCellKind(CellKind):
    """DARTS: ``layers`` cells, reduction cells at 1/3 and 2/3 depth, each opening the next stage."""

    def count(self, space: SpaceConfig, layers: int | None = None) -> int:
        return space.layers if layers is None else layers

    def reduction_layers(self, space: SpaceConfig, layers: int | None = None) -> tuple[int, ...]:
        n = self.count(space, layers)
        return (n // 3, 2 * n // 3)

    def stage(self, space: SpaceConfig, index: int, layers: int | None = None) -> int:
        return len({r for r in self.reduction_layers(space, layers) if r <= index})


@dataclass(frozen=True)
class NB201CellKind(CellKind):
    """NAS-Bench-201: 3 stages of ``layers`` cells; the reductions are fixed residual blocks between
    stages, so no searchable cell reduces."""

    def count(self, space: SpaceConfig, layers: int | None = None) -> int:
        return 3 * (space.layers if layers is None else layers)

    def reduction_layers(self, space: SpaceConfig, layers: int | None = None) -> tuple[int, ...]:
        return ()

    def stage(self, space: SpaceConfig, index: int, layers: int | None = None) -> int:
        return index // (space.layers if layers is None else layers)


@dataclass(frozen=True)
class BlockKind(SpaceKind):
    """A fixed macro network (``skeleton``, see :mod:`pflnas.spaces.skeletons`) whose every block chooses
    one op; ``body`` names the network class the supernet and the derived network share. Its depth is
    the skeleton's, so ``layers`` arguments are ignored."""

    skeleton: type = ResNetSkeleton
    body: str = ""

    def count(self, space: SpaceConfig, layers: int | None = None) -> int:
        return len(space.sites())

    def reduction_layers(self, space: SpaceConfig, layers: int | None = None) -> tuple[int, ...]:
        return tuple(s.index for s in space.sites() if s.stride == 2)

    def stage(self, space: SpaceConfig, index: int, layers: int | None = None) -> int:
        return space.sites()[index].stage

    def choice_keys(self, space: SpaceConfig) -> list[str]:
        return [BLOCK_CHOICE]

    def group_ops(self, space: SpaceConfig, group: str) -> tuple[str, ...]:
        block_type = dict(self.alpha_groups(space))[group]
        return space.ops_at(space.type_stride(block_type))

    def op_sites(self, space: SpaceConfig, image_size: int) -> list[OpSite]:
        return space.skeleton_config().op_sites(image_size)

    def network_shape(self, space: SpaceConfig) -> tuple[int, int]:
        return space.skeleton_config().first_width(), self.count(space)

    def body_class(self) -> type:
        return _resolve(self.body)  # type: ignore[no-any-return]


_SUPERNETS = "pflnas.supernet.network"
KINDS: dict[str, SpaceKind] = {
    k.name: k
    for k in (
        # 2 inputs (c_{k-2}, c_{k-1}), output = concat of intermediates; keep the 2 strongest non-none
        # incoming edges per node.
        DartsCellKind(
            name="darts_cell",
            context="cell",
            unit="cell",
            supernet=f"{_SUPERNETS}:DartsSupernet",
            inputs=2,
            output="concat",
            keep_edges=2,
            min_layers=3,
        ),
        # 1 input, output = last node; every edge keeps its argmax op (none included).
        NB201CellKind(
            name="nb201_cell",
            context="cell",
            unit="cell",
            supernet=f"{_SUPERNETS}:NB201Supernet",
            shared_group="cell",
        ),
        # Block spaces: one choice per block (the bottleneck's spatial op, or the transformer's token mixer).
        BlockKind(
            name="resnet_block",
            context="bottleneck",
            unit="block",
            supernet=f"{_SUPERNETS}:BlockSupernet",
            skeleton=ResNetSkeleton,
            body="pflnas.models.resnet_block:ResNetBlockNet",
        ),
        BlockKind(
            name="vit_block",
            context="token",
            unit="block",
            supernet=f"{_SUPERNETS}:BlockSupernet",
            skeleton=ViTSkeleton,
            body="pflnas.models.transformer_block:ViTBlockNet",
        ),
        BlockKind(
            name="pit_block",
            context="token",
            unit="block",
            supernet=f"{_SUPERNETS}:BlockSupernet",
            skeleton=PiTSkeleton,
            body="pflnas.models.transformer_block:PiTBlockNet",
        ),
    )
}
