"""The found.json record: a versioned, strictly validated description of a found architecture.

Every study, retraining and report reads architectures from this one file, so it is validated against its
space when built or loaded (a bad record fails with one clear line, not later in training). The schema
(version 1, docs/found_json.md) is sketched on :class:`Architecture`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pflnas.errors import ArchitectureError, ConfigError
from pflnas.names import name_hint
from pflnas.ops import PARAM_FREE, ZERO, get_op, list_ops
from pflnas.parsing import parse_json, read_capped_text
from pflnas.spaces.config import SpaceConfig, list_spaces, load_space, space_from_dict
from pflnas.utils_io import atomic_write_json

SCHEMA_VERSION = 1
MAX_FILE_BYTES = 16 * 1024 * 1024  # a found.json is kilobytes; refuse to parse anything absurd


@dataclass(frozen=True)
class Edge:
    """One kept edge: intermediate ``node`` receives ``op(source)``."""

    node: int
    source: int
    op: str


@dataclass(frozen=True)
class CellArch:
    """The chosen edges of one alpha group (a cell, or a shared normal/reduce cell)."""

    name: str
    type: str
    edges: tuple[Edge, ...]
    concat: tuple[int, ...]


@dataclass(frozen=True)
class BlockChoice:
    """The chosen op of one alpha group of a block space (a block, or a shared normal/reduce type)."""

    name: str
    type: str
    op: str


@dataclass(frozen=True)
class Decision:
    """One discrete choice of an architecture: alpha group, its type, the op, and the op's stride."""

    group: str
    type: str
    op: str
    stride: int


@dataclass(frozen=True)
class Architecture:
    """A found architecture: ``cells`` for cell spaces, ``blocks`` for block spaces.

    Build with :func:`load_architecture` or the derivation. Schema version 1 (docs/found_json.md)::

        {
          "schema_version": 1,
          "space": {"name", "kind", "ops", "nodes", "alpha_mode", "layers", ...},   # the resolved space
          "cells": [{"name": "cell0", "type": "normal", "concat": [2, 3, 4, 5],
                     "edges": [{"node": 2, "source": 0, "op": "max_pool_3x3"}, ...]}, ...],
          "probabilities": {"cell0.edge2<-0": {"conv_3x3": 0.21, ...}, ...},
          "param_free_share": 0.5,
          "provenance": {...}
        }

    Block spaces (``resnet_block``, ``vit_block``, ``pit_block``) carry ``"blocks"`` instead of
    ``"cells"``: one ``{"name": "block3", "type": "normal", "op": "max_pool_3x3"}`` per alpha group, and
    probability labels ``block3.op``.
    """

    space: SpaceConfig
    cells: tuple[CellArch, ...] = ()
    probabilities: dict[str, dict[str, float]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    blocks: tuple[BlockChoice, ...] = ()

    def __post_init__(self) -> None:
        if self.space.is_block:
            if self.cells:
                raise ArchitectureError(
                    f"space {self.space.name!r} is a block space: give 'blocks', not 'cells'"
                )
            validate_blocks(self.space, self.blocks)
        else:
            if self.blocks:
                raise ArchitectureError(
                    f"space {self.space.name!r} is a cell space: give 'cells', not 'blocks'"
                )
            validate_cells(self.space, self.cells)

    # --- derived facts ----------------------------------------------------------------------------
    def cell(self, name: str) -> CellArch:
        for c in self.cells:
            if c.name == name:
                return c
        raise KeyError(name)

    def block(self, name: str) -> BlockChoice:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(name)

    def kept_edges(self) -> list[tuple[CellArch, Edge]]:
        return [(c, e) for c in self.cells for e in c.edges]

    def decisions(self) -> list[Decision]:
        """Every discrete choice: each kept edge of a cell space, or each block choice."""
        if self.space.is_block:
            return [Decision(b.name, b.type, b.op, self.space.type_stride(b.type)) for b in self.blocks]
        return [
            Decision(c.name, c.type, e.op, self.space.edge_stride(c.type, e.source))
            for c, e in self.kept_edges()
        ]

    def param_free_share(self) -> float:
        """Share of non-``none`` choices (kept edges or blocks) whose op is parameter-free at its stride.

        ``none`` edges (NB201) are neither a parameter-free op nor a trainable one, so they are excluded
        from both counts. Returns NaN when there is no such choice.
        """
        roles = [get_op(d.op).role(d.stride) for d in self.decisions()]
        counted = [r == PARAM_FREE for r in roles if r != ZERO]
        return sum(counted) / len(counted) if counted else math.nan

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.decisions():
            counts[d.op] = counts.get(d.op, 0) + 1
        return counts

    # --- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        share = self.param_free_share()
        body: dict[str, Any]
        if self.space.is_block:
            body = {"blocks": [{"name": b.name, "type": b.type, "op": b.op} for b in self.blocks]}
        else:
            body = {
                "cells": [
                    {
                        "name": c.name,
                        "type": c.type,
                        "concat": list(c.concat),
                        "edges": [{"node": e.node, "source": e.source, "op": e.op} for e in c.edges],
                    }
                    for c in self.cells
                ]
            }
        return {
            "schema_version": SCHEMA_VERSION,
            "space": self.space.to_dict(),
            **body,
            "probabilities": self.probabilities,
            "param_free_share": None if math.isnan(share) else round(share, 6),
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: Any, origin: str = "architecture") -> Architecture:
        return _parse(data, origin)


def expected_groups(space: SpaceConfig) -> list[tuple[str, str]]:
    return space.alpha_groups()


def validate_cells(space: SpaceConfig, cells: tuple[CellArch, ...]) -> None:
    """Raise ArchitectureError unless ``cells`` is a consistent architecture of ``space``."""
    expected = expected_groups(space)
    if len(cells) != len(expected):
        raise ArchitectureError(
            f"wrong number of cells: space {space.name!r} ({space.alpha_mode} alphas, {space.layers} layers) "
            f"has {len(expected)} cell groups, the record has {len(cells)}"
        )
    for cell, (name, ctype) in zip(cells, expected):
        if cell.name != name or cell.type != ctype:
            raise ArchitectureError(
                f"cell {cell.name!r} ({cell.type}) is out of place: "
                f"expected {name!r} ({ctype}) at that position"
            )
        _validate_cell(space, cell)


def validate_blocks(space: SpaceConfig, blocks: tuple[BlockChoice, ...]) -> None:
    """Raise ArchitectureError unless ``blocks`` is one valid choice per alpha group of ``space``."""
    expected = space.alpha_groups()
    if len(blocks) != len(expected):
        raise ArchitectureError(
            f"wrong number of blocks: space {space.name!r} ({space.alpha_mode} alphas) has "
            f"{len(expected)} block groups, the record has {len(blocks)}"
        )
    for block, (name, btype) in zip(blocks, expected):
        if block.name != name or block.type != btype:
            raise ArchitectureError(
                f"block {block.name!r} ({block.type}) is out of place: "
                f"expected {name!r} ({btype}) at that position"
            )
        allowed = space.group_ops(name)
        if block.op not in allowed:
            if block.op not in space.ops:
                why = f"is not a candidate of space {space.name!r}{_op_hint(block.op, allowed)}"
            else:
                why = f"cannot be placed at a stride-{space.type_stride(btype)} ({btype}) block"
            raise ArchitectureError(
                f"block {name!r}: op {block.op!r} {why}; choose one of {', '.join(allowed)}"
            )


def _op_hint(op: str, candidates: tuple[str, ...]) -> str:
    """Why ``op`` is no candidate when it is not even registered, with the closest candidate."""
    return "" if op in list_ops() else f" (not a registered op){name_hint(op, candidates)}"


def _validate_cell(space: SpaceConfig, cell: CellArch) -> None:
    nodes = set(space.node_ids())
    where = f"cell {cell.name!r}"
    for e in cell.edges:
        if e.op not in space.ops:
            raise ArchitectureError(
                f"{where}: op {e.op!r}{_op_hint(e.op, space.ops)} is not a candidate of space {space.name!r} "
                f"({', '.join(space.ops)})"
            )
        if e.node not in nodes:
            raise ArchitectureError(
                f"{where}: edge into node {e.node}, but the space's intermediate nodes are {sorted(nodes)}"
            )
        if not 0 <= e.source < e.node:
            raise ArchitectureError(
                f"{where}: edge {e.node}<-{e.source} reads a missing or later node "
                f"(sources must be 0..{e.node - 1})"
            )
    per_node = {n: [e for e in cell.edges if e.node == n] for n in nodes}
    keep = space.keep_edges
    for n, edges in per_node.items():
        want = keep if keep is not None else n
        if len(edges) != want:
            raise ArchitectureError(
                f"{where}: node {n} has {len(edges)} incoming edges, the space keeps {want}"
            )
        if keep is None and sorted(e.source for e in edges) != list(range(n)):
            raise ArchitectureError(
                f"{where}: node {n} must have exactly one edge from each of nodes 0..{n - 1}"
            )
        if keep is not None and any(get_op(e.op).is_zero for e in edges):
            raise ArchitectureError(f"{where}: node {n} keeps a 'none' edge; kept edges must carry an op")
    if tuple(cell.concat) != space.concat():
        raise ArchitectureError(f"{where}: concat {list(cell.concat)} should be {list(space.concat())}")


# --- parsing ----------------------------------------------------------------------------------------
_KIND_NAMES = {int: "an integer", str: "a string", list: "a list", dict: "an object"}


def _need(mapping: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
    """``mapping[key]`` if present and of ``kind``; ``where`` prefixes the message (empty: top level)."""
    prefix = f"{where}: " if where else ""
    if key not in mapping:
        raise ArchitectureError(f"{prefix}missing key {key!r}")
    value = mapping[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ArchitectureError(
            f"{prefix}{key!r} must be {_KIND_NAMES.get(kind, kind.__name__)}, got {type(value).__name__}"
        )
    return value


def _parse_space(raw: Any) -> SpaceConfig:
    if not isinstance(raw, dict):
        raise ArchitectureError("'space' must be an object with the resolved search space")
    try:
        space = space_from_dict(raw, "space")
    except (ConfigError, TypeError) as exc:
        raise ArchitectureError(f"invalid 'space': {exc}") from None
    if space.name in list_spaces():
        builtin = load_space(space.name)
        if builtin.kind != space.kind or not set(space.ops) <= set(builtin.ops):
            raise ArchitectureError(
                f"the record names space {space.name!r} but its kind/ops "
                f"({space.kind}: {', '.join(space.ops)}) are not those of the built-in space "
                f"({builtin.kind}: {', '.join(builtin.ops)})"
            )
    return space


def _parse(data: Any, origin: str) -> Architecture:
    if not isinstance(data, dict):
        raise ArchitectureError(f"{origin}: the top level must be a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ArchitectureError(
            f"{origin}: unsupported schema_version {version!r}; this pflnas reads version {SCHEMA_VERSION}"
        )
    known = {"schema_version", "space", "cells", "blocks", "probabilities", "param_free_share", "provenance"}
    extra = sorted(set(data) - known)
    if extra:
        raise ArchitectureError(f"{origin}: unknown key(s) {extra}; allowed: {sorted(known)}")
    try:
        space = _parse_space(data.get("space"))
        body = "blocks" if space.is_block else "cells"
        other = "cells" if space.is_block else "blocks"
        if other in data:
            raise ArchitectureError(f"a {space.kind} space records {body!r}, not {other!r}")
        blocks = _parse_blocks(_need(data, "blocks", list)) if space.is_block else ()
        raw_cells = [] if space.is_block else _need(data, "cells", list)
        cells = []
        for i, rc in enumerate(raw_cells):
            where = f"cells[{i}]"
            if not isinstance(rc, dict):
                raise ArchitectureError(f"{where} must be an object")
            edges = []
            for j, re_ in enumerate(_need(rc, "edges", list, where)):
                ew = f"{where}.edges[{j}]"
                if not isinstance(re_, dict):
                    raise ArchitectureError(f"{ew} must be an object")
                edges.append(
                    Edge(
                        _need(re_, "node", int, ew), _need(re_, "source", int, ew), _need(re_, "op", str, ew)
                    )
                )
            concat = _need(rc, "concat", list, where)
            if not all(isinstance(c, int) and not isinstance(c, bool) for c in concat):
                raise ArchitectureError(f"{where}: 'concat' must be a list of node ids")
            cells.append(
                CellArch(
                    _need(rc, "name", str, where), _need(rc, "type", str, where), tuple(edges), tuple(concat)
                )
            )
        share = _recorded_share(data.get("param_free_share"))
        probs = data.get("probabilities", {})
        provenance = data.get("provenance", {})
        if not isinstance(provenance, dict):
            raise ArchitectureError("'provenance' must be an object")
        arch = Architecture(space, tuple(cells), probs, provenance, blocks)  # checks the graph first
        _check_probabilities(probs, space)
        _check_share_matches(share, arch)
        return arch
    except ArchitectureError as exc:
        raise ArchitectureError(f"{origin}: {exc}") from None


def _parse_blocks(raw: list[Any]) -> tuple[BlockChoice, ...]:
    out = []
    for i, rb in enumerate(raw):
        where = f"blocks[{i}]"
        if not isinstance(rb, dict):
            raise ArchitectureError(f"{where} must be an object")
        extra = sorted(set(rb) - {"name", "type", "op"})
        if extra:
            raise ArchitectureError(f"{where}: unknown key(s) {extra}; a block has name, type, op")
        out.append(
            BlockChoice(
                _need(rb, "name", str, where), _need(rb, "type", str, where), _need(rb, "op", str, where)
            )
        )
    return tuple(out)


def _recorded_share(share: Any) -> float | None:
    """The record's ``param_free_share``: null, or a number in [0, 1] (a share, not a percentage)."""
    if share is None:
        return None
    if not isinstance(share, (int, float)) or isinstance(share, bool):
        raise ArchitectureError("'param_free_share' must be a number in [0, 1] or null")
    if not 0.0 <= share <= 1.0:
        raise ArchitectureError(f"'param_free_share' is {share}, but a share must be in [0, 1]")
    return float(share)


def _check_share_matches(share: float | None, arch: Architecture) -> None:
    """A recorded share that disagrees with the record's own choices would be reported silently wrong."""
    actual = arch.param_free_share()
    if share is not None and (math.isnan(actual) or abs(share - actual) > 1e-4):
        counted = "no op is counted" if math.isnan(actual) else f"the choices give {actual:.6f}"
        raise ArchitectureError(f"'param_free_share' is {share}, but {counted}; correct it or set it to null")


def _check_probabilities(probs: Any, space: SpaceConfig) -> None:
    if not isinstance(probs, dict):
        raise ArchitectureError("'probabilities' must map edge labels to {op: probability}")
    allowed = {f"{g}.{k}": space.group_ops(g) for g, _ in space.alpha_groups() for k in space.choice_keys()}
    labels = set(allowed)
    for label, dist in probs.items():
        if label not in labels:
            raise ArchitectureError(
                f"probabilities: {label!r} is not an edge of this space (labels look like {min(labels)!r})"
            )
        if not isinstance(dist, dict) or not dist:
            raise ArchitectureError(
                f"probabilities[{label!r}] must be a non-empty object of op -> probability"
            )
        for op, p in dist.items():
            if op not in allowed[label]:
                raise ArchitectureError(
                    f"probabilities[{label!r}]: op {op!r} is not in space {space.name!r} at that "
                    f"position (candidates: {', '.join(allowed[label])})"
                )
            if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
                raise ArchitectureError(f"probabilities[{label!r}][{op!r}] must be a number in [0, 1]")
        missing = [op for op in allowed[label] if op not in dist]
        if missing:
            raise ArchitectureError(
                f"probabilities[{label!r}] lacks op(s) {', '.join(missing)}; a distribution gives every "
                f"candidate of its choice ({', '.join(allowed[label])})"
            )
        if abs(sum(dist.values()) - 1.0) > 1e-3:
            raise ArchitectureError(f"probabilities[{label!r}] sums to {sum(dist.values()):.4f}, not 1")


def load_architecture(path: str | Path) -> Architecture:
    """Read and validate a found.json; any problem raises ArchitectureError with one clear line."""
    if not os.path.lexists(path):
        raise ArchitectureError(f"{path}: no such file")
    text = read_capped_text(path, "found.json", MAX_FILE_BYTES, ArchitectureError)
    if not text.strip():
        raise ArchitectureError(f"{path}: the file is empty; expected a found.json from 'pflnas search'")
    return Architecture.from_dict(parse_json(text, str(path), ArchitectureError), str(path))


def save_architecture(arch: Architecture, path: str | Path) -> Path:
    return atomic_write_json(path, arch.to_dict())
