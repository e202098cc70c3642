"""Search-space configuration: a frozen dataclass loaded from ``search_spaces/*.yaml`` or any YAML path."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pflnas.errors import ConfigError
from pflnas.ops import get_op, list_ops

# What each kind of space fixes: how many input nodes a cell has, how its output is formed, how an
# architecture is derived from the weights, and which macro skeleton holds the cells.
KINDS: dict[str, dict[str, Any]] = {
    # 2 inputs (c_{k-2}, c_{k-1}), output = concat of intermediates; keep the 2 strongest non-none
    # incoming edges per node; reductions at 1/3 and 2/3 depth.
    "darts_cell": {"inputs": 2, "output": "concat", "keep_edges": 2},
    # 1 input, output = last node; every edge keeps its argmax op (none included); residual reductions.
    "nb201_cell": {"inputs": 1, "output": "last", "keep_edges": None},
}
ALPHA_MODES = ("individual", "shared")


@dataclass(frozen=True)
class SpaceConfig:
    """A cell search space. ``nodes`` counts intermediate nodes; node ids ``0..inputs-1`` are inputs."""

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
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"space {self.name!r}: unknown kind {self.kind!r}; use one of {sorted(KINDS)}")
        unknown = [op for op in self.ops if op not in list_ops()]
        if unknown:
            raise ConfigError(
                f"space {self.name!r}: unknown op(s) {unknown}; registered ops are {', '.join(list_ops())}"
            )
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
        if self.kind == "darts_cell" and self.layers < 3:
            raise ConfigError(
                f"space {self.name!r}: a DARTS-cell network needs layers >= 3, got {self.layers}"
            )
        if all(get_op(op).is_zero for op in self.ops):
            raise ConfigError(f"space {self.name!r}: needs at least one op other than 'none'")

    # --- structure fixed by the kind -------------------------------------------------------------
    @property
    def inputs(self) -> int:
        return int(KINDS[self.kind]["inputs"])

    @property
    def keep_edges(self) -> int | None:
        return KINDS[self.kind]["keep_edges"]

    def node_ids(self) -> range:
        """Ids of the intermediate nodes."""
        return range(self.inputs, self.inputs + self.nodes)

    def edges(self) -> list[tuple[int, int]]:
        """All candidate edges as ``(node, source)`` in a fixed order (by node, then source)."""
        return [(node, src) for node in self.node_ids() for src in range(node)]

    def concat(self) -> tuple[int, ...]:
        if KINDS[self.kind]["output"] == "concat":
            return tuple(self.node_ids())
        return (self.inputs + self.nodes - 1,)

    def reduction_layers(self, layers: int | None = None) -> tuple[int, ...]:
        """Indices of reduction cells in a DARTS-cell network of ``layers`` cells."""
        n = self.layers if layers is None else layers
        if self.kind != "darts_cell":
            return ()
        return (n // 3, 2 * n // 3)

    def num_cells(self, layers: int | None = None) -> int:
        """Number of searchable cells in the network (NB201: 3 stages of ``layers`` cells)."""
        n = self.layers if layers is None else layers
        return n if self.kind == "darts_cell" else 3 * n

    def cell_types(self, layers: int | None = None) -> list[str]:
        reductions = self.reduction_layers(layers)
        return ["reduce" if i in reductions else "normal" for i in range(self.num_cells(layers))]

    def alpha_groups(self) -> list[tuple[str, str]]:
        """The architecture-weight groups as ``(group name, cell type)``.

        individual: one group per cell (``cell0`` ...); shared: one per cell type (``normal``,
        ``reduce``) for DARTS cells, or one ``cell`` group for NB201 (its reductions are fixed blocks).
        """
        if self.alpha_mode == "individual":
            return [(f"cell{i}", t) for i, t in enumerate(self.cell_types())]
        if self.kind == "darts_cell":
            return [("normal", "normal"), ("reduce", "reduce")]
        return [("cell", "normal")]

    def group_of_cell(self, index: int) -> str:
        """The alpha group that cell ``index`` of the search network reads."""
        if self.alpha_mode == "individual":
            return f"cell{index}"
        if self.kind == "darts_cell":
            return self.cell_types()[index]
        return "cell"

    def edge_stride(self, cell_type: str, source: int) -> int:
        return 2 if cell_type == "reduce" and source < self.inputs else 1

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["ops"] = list(self.ops)
        return out

    def replace(self, **changes: Any) -> SpaceConfig:
        fields = {f.name for f in dataclasses.fields(self)} - {"name", "kind", "extra"}
        bad = sorted(set(changes) - fields)
        if bad:
            raise ConfigError(
                f"space {self.name!r}: cannot override {bad}; overridable keys: {sorted(fields)}"
            )
        if "ops" in changes:
            changes["ops"] = tuple(changes["ops"])
        return dataclasses.replace(self, **changes)


def _builtin_dir() -> Path:
    return Path(str(resources.files("search_spaces")))


def list_spaces() -> list[str]:
    return sorted(p.stem for p in _builtin_dir().glob("*.yaml"))


def space_from_dict(data: dict[str, Any], origin: str) -> SpaceConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a space definition must be a YAML mapping")
    names = {f.name for f in dataclasses.fields(SpaceConfig)} - {"extra"}
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
                f"unknown search space {text!r}; built-in spaces: {', '.join(list_spaces())} "
                "(or give a YAML path)"
            )
    if not path.is_file():
        raise ConfigError(f"search space file {text} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return space_from_dict(data, str(path))
