"""Search-space configuration: a frozen dataclass loaded from ``search_spaces/*.yaml`` or any YAML path.

A space is data: its ``kind`` names a :class:`~pflnas.spaces.kinds.SpaceKind` that answers everything the kind
fixes (reductions, stages, alpha groups, supernet), so the methods here only ask it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pflnas.errors import ConfigError
from pflnas.names import name_hint
from pflnas.ops import get_op, list_ops
from pflnas.parsing import load_yaml
from pflnas.spaces.kinds import KINDS, BlockKind, CellKind, SpaceKind
from pflnas.spaces.skeletons import BlockSite, OpSite, Skeleton, parse_skeleton

CELL_FIELDS = ("nodes", "init_channels", "layers", "stem_multiplier", "pool_bn")
ALPHA_MODES = ("individual", "shared")
# Far above any published space, low enough that a typo (nodes: 40000) fails at once instead of exhausting
# memory while the edges, cells or blocks are enumerated.
MAX_NODES, MAX_LAYERS, MAX_BLOCKS = 32, 256, 1024


@dataclass(frozen=True)
class SpaceConfig:
    """A search space.

    Cell spaces: ``nodes`` counts intermediate nodes (node ids ``0..inputs-1`` are inputs); the search
    network has ``layers`` cells of ``init_channels``. Block spaces: ``skeleton`` holds the macro network
    (see :mod:`pflnas.spaces.skeletons`) and every block chooses one of ``ops``.
    """

    name: str
    kind: str
    ops: tuple[str, ...]
    nodes: int = 4
    alpha_mode: str = "individual"
    init_channels: int = 16
    layers: int = 8
    stem_multiplier: int = 3
    pool_bn: bool = True
    description: str = ""
    skeleton: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("name", "kind", "description"):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"space {key} must be a string, got {getattr(self, key)!r}")
        if not isinstance(self.pool_bn, bool):
            raise ConfigError(f"space {self.name!r}: pool_bn must be true or false, got {self.pool_bn!r}")
        if self.kind not in KINDS:
            raise ConfigError(f"space {self.name!r}: unknown kind {self.kind!r}; use one of {sorted(KINDS)}")
        unknown = [op for op in self.ops if op not in list_ops()]
        if unknown:
            raise ConfigError(
                f"space {self.name!r}: unknown op(s) {unknown}{name_hint(unknown[0], list_ops())}; "
                f"registered ops are {', '.join(list_ops())}"
            )
        self._check_contexts()
        if self.is_block:
            self._resolve_skeleton()
        elif self.skeleton:
            raise ConfigError(f"space {self.name!r}: 'skeleton' is only for block spaces, not {self.kind}")
        self._check_sizes()

    def _check_contexts(self) -> None:
        context = self.context
        wrong = [op for op in self.ops if context not in get_op(op).contexts()]
        if wrong:
            raise ConfigError(
                f"space {self.name!r}: op(s) {wrong} have no {context!r} form, which {self.kind} spaces "
                f"need; {context} ops are {', '.join(list_ops(context))}"
            )

    def _resolve_skeleton(self) -> None:
        """Parse a block space's skeleton, keep the typed one and store its resolved fields as the mapping."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        cell_only = sorted(k for k in CELL_FIELDS if getattr(self, k) != defaults[k])
        if cell_only:
            raise ConfigError(
                f"space {self.name!r} is a {self.kind} space: {cell_only} apply to cell spaces only; "
                "change its skeleton instead (e.g. space.skeleton.width_mult=0.5)"
            )
        kind = self.kind_spec
        assert isinstance(kind, BlockKind)
        skeleton = parse_skeleton(kind.skeleton, self.kind, self.skeleton, f"space {self.name!r}")
        object.__setattr__(self, "_skeleton", skeleton)
        # counted from the depths, before any list of blocks is built
        depths = getattr(skeleton, "depths", None)
        blocks = sum(depths) if depths is not None else getattr(skeleton, "depth", 0)
        if blocks > MAX_BLOCKS:
            raise ConfigError(
                f"space {self.name!r}: the skeleton has {blocks} blocks, far too many (at most {MAX_BLOCKS})"
            )
        resolved = {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(skeleton).items()
        }
        object.__setattr__(self, "skeleton", resolved)
        for stride in sorted({s.stride for s in self.sites()}):
            if not self.ops_at(stride):
                raise ConfigError(
                    f"space {self.name!r}: no candidate op can be placed at stride {stride} "
                    f"(ops {', '.join(self.ops)})"
                )

    def _check_sizes(self) -> None:
        if len(set(self.ops)) != len(self.ops) or len(self.ops) < 1:
            raise ConfigError(f"space {self.name!r}: ops must be a non-empty list without repeats")
        if self.alpha_mode not in ALPHA_MODES:
            raise ConfigError(
                f"space {self.name!r}: alpha_mode must be one of {ALPHA_MODES}, got {self.alpha_mode!r}"
            )
        for key in ("nodes", "init_channels", "layers", "stem_multiplier"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"space {self.name!r}: {key} must be a positive integer, got {value!r}")
        for key, limit in (("nodes", MAX_NODES), ("layers", MAX_LAYERS)):
            if getattr(self, key) > limit:
                raise ConfigError(
                    f"space {self.name!r}: {key} {getattr(self, key)} is far too large (at most {limit})"
                )
        if not self.is_block and self.layers < self._cell_kind().min_layers:
            raise ConfigError(
                f"space {self.name!r}: a {self.kind} network needs layers >= {self._cell_kind().min_layers}, "
                f"got {self.layers}"
            )
        if all(get_op(op).is_zero for op in self.ops):
            raise ConfigError(f"space {self.name!r}: needs at least one op other than 'none'")

    # --- structure fixed by the kind -------------------------------------------------------------
    @property
    def kind_spec(self) -> SpaceKind:
        """The kind object that answers what this space's ``kind`` fixes."""
        return KINDS[self.kind]

    def _cell_kind(self) -> CellKind:
        kind = self.kind_spec
        if not isinstance(kind, CellKind):
            raise ConfigError(f"space {self.name!r} is a {self.kind} space; it has no cells")
        return kind

    @property
    def context(self) -> str:
        """The op context the candidates are built in (``cell``, ``bottleneck`` or ``token``)."""
        return self.kind_spec.context

    @property
    def is_block(self) -> bool:
        return self.kind_spec.is_block

    def skeleton_config(self) -> Skeleton:
        """The typed skeleton of a block space."""
        if not self.is_block:
            raise ConfigError(f"space {self.name!r} is a cell space; it has no block skeleton")
        return self._skeleton  # type: ignore[attr-defined,no-any-return]

    def sites(self) -> list[BlockSite]:
        """The searchable blocks of a block space, in network order."""
        return self.skeleton_config().sites()

    def op_sites(self, image_size: int) -> list[OpSite]:
        """Where candidate ops run in the search network, per stage and stride (for the per-op benchmark).

        Cell spaces: stage ``s`` has ``init_channels * 2**s`` channels at ``image_size / 2**s`` (DARTS and
        NB201 stems keep the input size); DARTS reduction cells run their input edges at stride 2 on the
        previous stage's resolution. ``blocks`` counts the edges that run the op at that site.
        """
        return self.kind_spec.op_sites(self, image_size)

    def ops_at(self, stride: int) -> tuple[str, ...]:
        """The candidates that can be placed at ``stride`` in this space's context."""
        return tuple(op for op in self.ops if get_op(op).supports(self.context, stride))

    def group_ops(self, group: str) -> tuple[str, ...]:
        """The candidates of every choice in alpha group ``group``."""
        return self.kind_spec.group_ops(self, group)

    @staticmethod
    def type_stride(block_type: str) -> int:
        return 2 if block_type == "reduce" else 1

    def choice_keys(self) -> list[str]:
        """The choices inside one alpha group: the cell's edges, or the block's single op slot."""
        return self.kind_spec.choice_keys(self)

    def group_of_block(self, index: int) -> str:
        """The alpha group that block ``index`` reads."""
        return self.kind_spec.group_of(self, index)

    @property
    def inputs(self) -> int:
        return self._cell_kind().inputs

    @property
    def keep_edges(self) -> int | None:
        return self._cell_kind().keep_edges

    def node_ids(self) -> range:
        """Ids of the intermediate nodes."""
        return range(self.inputs, self.inputs + self.nodes)

    def edges(self) -> list[tuple[int, int]]:
        """All candidate edges as ``(node, source)`` in a fixed order (by node, then source)."""
        return [(node, src) for node in self.node_ids() for src in range(node)]

    @property
    def concat_output(self) -> bool:
        """A cell's output concatenates its intermediate nodes (DARTS), else it is the last node (NB201)."""
        return self._cell_kind().output == "concat"

    def concat(self) -> tuple[int, ...]:
        if self.concat_output:
            return tuple(self.node_ids())
        return (self.inputs + self.nodes - 1,)

    def reduction_layers(self, layers: int | None = None) -> tuple[int, ...]:
        """Indices of the reducing cells (or stride-2 blocks) of a network of ``layers`` cells."""
        return self.kind_spec.reduction_layers(self, layers)

    def num_cells(self, layers: int | None = None) -> int:
        """Number of searchable cells (or blocks) in the network (NB201: 3 stages of ``layers`` cells)."""
        return self.kind_spec.count(self, layers)

    def cell_types(self, layers: int | None = None) -> list[str]:
        return self.kind_spec.types(self, layers)

    def stage(self, index: int, layers: int | None = None) -> int:
        """The stage of searchable cell (or block) ``index``: how many reductions come before or at it."""
        return self.kind_spec.stage(self, index, layers)

    def alpha_groups(self) -> list[tuple[str, str]]:
        """The architecture-weight groups as ``(group name, cell type)``.

        individual: one group per cell (``cell0`` ...); shared: one per cell type (``normal``,
        ``reduce``) for DARTS cells, or one ``cell`` group for NB201 (its reductions are fixed blocks).
        Block spaces: one group per block (``block0`` ...), or one per block type (``normal``, and
        ``reduce`` when some blocks downsample).
        """
        return self.kind_spec.alpha_groups(self)

    def group_of_cell(self, index: int) -> str:
        """The alpha group that cell ``index`` of the search network reads."""
        return self.kind_spec.group_of(self, index)

    def edge_stride(self, cell_type: str, source: int) -> int:
        return 2 if cell_type == "reduce" and source < self.inputs else 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; cell spaces leave out ``skeleton``, block spaces the cell-only fields."""
        skip = CELL_FIELDS if self.is_block else ("skeleton",)
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        out["ops"] = list(self.ops)
        if self.is_block:
            out["skeleton"] = dict(self.skeleton)
        return out

    def replace(self, **changes: Any) -> SpaceConfig:
        fields = {f.name for f in dataclasses.fields(self)} - {"name", "kind"}
        bad = sorted(set(changes) - fields)
        if bad:
            raise ConfigError(
                f"space {self.name!r}: cannot override {bad}; overridable keys: {sorted(fields)}"
            )
        if "ops" in changes:
            changes["ops"] = tuple(changes["ops"])
        if "skeleton" in changes:
            if not isinstance(changes["skeleton"], dict):
                raise ConfigError(f"space {self.name!r}: skeleton overrides must be a mapping")
            changes["skeleton"] = {**self.skeleton, **changes["skeleton"]}
        return dataclasses.replace(self, **changes)


def _builtin_dir() -> Path:
    return Path(str(resources.files("search_spaces")))


def list_spaces() -> list[str]:
    return sorted(p.stem for p in _builtin_dir().glob("*.yaml"))


def space_from_dict(data: dict[str, Any], origin: str) -> SpaceConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a space definition must be a YAML mapping")
    names = {f.name for f in dataclasses.fields(SpaceConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{origin}: unknown key(s) {unknown}; allowed keys: {sorted(names)}")
    for key in ("name", "kind", "ops"):
        if key not in data:
            raise ConfigError(f"{origin}: missing required key {key!r}")
    if not isinstance(data["ops"], list) or not all(isinstance(o, str) for o in data["ops"]):
        raise ConfigError(f"{origin}: 'ops' must be a list of op names")
    return SpaceConfig(**{**data, "ops": tuple(data["ops"])})


def load_space(name_or_path: str | Path) -> SpaceConfig:
    """Load a built-in space by name (``cell_v1``, ``darts``, ``nb201``) or a YAML file by path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or path.is_file()):
        path = _builtin_dir() / f"{text}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown search space {text!r}{name_hint(text, list_spaces())}; built-in spaces: "
                f"{', '.join(list_spaces())} (or give a YAML path)"
            )
    return space_from_dict(load_yaml(path, "search space file"), str(path))


def resolve_space(section: Any) -> SpaceConfig:
    """The space a config's ``space`` section names, with its other non-null fields applied as overrides.

    ``section`` is the config's space dataclass (``name`` plus overridable :class:`SpaceConfig` fields).
    """
    space = load_space(section.name)
    skip = ("name", "layout")  # layout: how the supernet holds the space (pflnas.supernet), not the space
    overrides = {k: v for k, v in dataclasses.asdict(section).items() if k not in skip and v is not None}
    return space.replace(**overrides) if overrides else space
