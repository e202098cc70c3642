"""NNI's exported choice (``{label: op}``, ``{label: [source]}``) as a pflnas architecture, and the labels
the bridge's model space uses. Pure Python on the space: converting a choice needs no ``nni`` import, so a
found.json can be made from an NNI export anywhere. Reach it through :mod:`pflnas.bridges.nni`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pflnas.arch.derive import derive_architecture
from pflnas.arch.record import Architecture, BlockChoice, CellArch, Edge
from pflnas.errors import ArchitectureError
from pflnas.ops import get_op
from pflnas.spaces.config import SpaceConfig
from pflnas.spaces.labels import edge_label

LAYOUTS = ("cell", "edges")


def default_layout(space: SpaceConfig, strategy: str | None = None) -> str:
    """``edges`` where the strategy or space needs it (Proxyless, non-DARTS cells), else ``cell``."""
    if space.kind != "darts_cell" or strategy == "proxyless":
        return "edges"
    return "cell"


def nni_labels(space: SpaceConfig, layout: str | None = None) -> dict[str, tuple[str, ...] | int]:
    """The choices :func:`to_nni_model_space` creates: ``{label: candidate op names}`` for op choices and
    ``{label: number of candidate sources}`` for the input choices of the ``cell`` layout (no nni needed)."""
    layout = layout or default_layout(space)
    if space.is_block:
        return {f"{g}.{space.choice_keys()[0]}": space.group_ops(g) for g, _ in space.alpha_groups()}
    groups = list(dict.fromkeys(g for g, _ in space.alpha_groups()))
    if layout == "edges":
        return {edge_label(g, n, s): space.ops for g in groups for n, s in space.edges()}
    ops = tuple(op for op in space.ops if not get_op(op).is_zero)
    out: dict[str, tuple[str, ...] | int] = {}
    for g in groups:
        for n in space.node_ids():
            for k in range(int(space.keep_edges or 1)):
                out[f"{g}/op_{n}_{k}"] = ops
                out[f"{g}/input_{n}_{k}"] = n
    return out


# --- NNI choice -> pflnas architecture ----------------------------------------------------------------
def from_nni_choice(
    space: SpaceConfig,
    choice: Mapping[str, Any],
    provenance: dict[str, Any] | None = None,
    probabilities: Mapping[str, Mapping[str, float]] | None = None,
) -> Architecture:
    """The pflnas architecture that NNI's exported choice dict selects in ``space``.

    ``choice`` is what NNI exports (``strategy.list_models()`` / ``export_top_models(formatter='dict')`` /
    a one-shot module's ``export()``): ``{label: op name}`` and, for DARTS cells in the ``cell`` layout,
    ``{label: [source]}``. ``probabilities`` (optional) is NNI's ``export_probs()``; it is stored in the
    record and, for DARTS cells in the ``edges`` layout, picks each node's two edges by the DARTS rule when
    the choice itself does not keep exactly two edges with an op per node. Any problem raises
    :class:`ArchitectureError` with one line; the result validates as a found.json.
    """
    if not isinstance(choice, Mapping) or not choice:
        raise ArchitectureError("NNI choice: expected a non-empty dict of {label: choice}")
    probs = _convert_probabilities(space, probabilities) if probabilities else {}
    prov = {"source": "nni", **(provenance or {})}
    try:
        if space.is_block:
            arch = _blocks_from_choice(space, choice, probs, prov)
        elif space.kind == "darts_cell" and any("/" in str(k) for k in choice):
            arch = _cells_from_cell_layout(space, choice, probs, prov)
        else:
            arch = _cells_from_edges(space, choice, probs, prov)
        return Architecture.from_dict(arch.to_dict(), "record")
    except ArchitectureError as exc:
        msg = str(exc)
        raise ArchitectureError(msg if msg.startswith("NNI choice") else f"NNI choice: {msg}") from None


def _check_labels(space: SpaceConfig, choice: Mapping[str, Any], expected: list[str]) -> None:
    unknown = sorted(str(k) for k in choice if k not in set(expected))
    if unknown:
        raise ArchitectureError(
            f"NNI choice: unknown label {unknown[0]!r} for space {space.name!r} "
            f"(its labels look like {expected[0]!r}; {len(unknown)} unknown in all)"
        )
    missing = [k for k in expected if k not in choice]
    if missing:
        raise ArchitectureError(
            f"NNI choice: missing label {missing[0]!r} ({len(missing)} of {len(expected)} labels missing)"
        )


def _op(space: SpaceConfig, label: str, value: Any, allowed: tuple[str, ...] | None = None) -> str:
    allowed = space.ops if allowed is None else allowed
    if not isinstance(value, str):
        raise ArchitectureError(f"NNI choice: {label!r} must name an op, got {value!r}")
    if value not in allowed:
        hint = "" if _registered(value) else " (not a registered op)"
        raise ArchitectureError(
            f"NNI choice: {label!r} chose unknown op {value!r}{hint}; candidates: {', '.join(allowed)}"
        )
    return value


def _registered(name: str) -> bool:
    try:
        get_op(name)
    except KeyError:
        return False
    return True


def _blocks_from_choice(
    space: SpaceConfig, choice: Mapping[str, Any], probs: dict[str, Any], prov: dict[str, Any]
) -> Architecture:
    key = space.choice_keys()[0]
    expected = [f"{g}.{key}" for g, _ in space.alpha_groups()]
    _check_labels(space, choice, expected)
    blocks = tuple(
        BlockChoice(g, t, _op(space, f"{g}.{key}", choice[f"{g}.{key}"], space.group_ops(g)))
        for g, t in space.alpha_groups()
    )
    return Architecture(space, (), probs, prov, blocks)


def _cells_from_cell_layout(
    space: SpaceConfig, choice: Mapping[str, Any], probs: dict[str, Any], prov: dict[str, Any]
) -> Architecture:
    labels = nni_labels(space, "cell")
    _check_labels(space, choice, list(labels))
    real = tuple(op for op in space.ops if not get_op(op).is_zero)
    cells = []
    for g, t in space.alpha_groups():
        edges = []
        for n in space.node_ids():
            for k in range(int(space.keep_edges or 1)):
                op = _op(space, f"{g}/op_{n}_{k}", choice[f"{g}/op_{n}_{k}"], real)
                src = _source(f"{g}/input_{n}_{k}", choice[f"{g}/input_{n}_{k}"], n)
                edges.append(Edge(n, src, op))
        cells.append(CellArch(g, t, tuple(edges), space.concat()))
    return Architecture(space, tuple(cells), probs, prov)


def _source(label: str, value: Any, node: int) -> int:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < node:
        raise ArchitectureError(
            f"NNI choice: {label!r} must be one source node in 0..{node - 1} (e.g. [0]), got {value!r}"
        )
    return value


def _cells_from_edges(
    space: SpaceConfig, choice: Mapping[str, Any], probs: dict[str, Any], prov: dict[str, Any]
) -> Architecture:
    labels = nni_labels(space, "edges")
    _check_labels(space, choice, list(labels))
    ops = {label: _op(space, label, choice[label]) for label in labels}
    keep = space.keep_edges
    cells = []
    for g, t in space.alpha_groups():
        edges = []
        for n in space.node_ids():
            node_edges = [Edge(n, s, ops[edge_label(g, n, s)]) for s in range(n)]
            if keep is not None:
                node_edges = [e for e in node_edges if not get_op(e.op).is_zero]
                if len(node_edges) != keep:
                    if probs:
                        return derive_architecture(space, probs, prov)
                    raise ArchitectureError(
                        f"NNI choice: node {n} of {g!r} has {len(node_edges)} edges with an op and a DARTS "
                        f"cell keeps {keep}; pass probabilities= (the strategy's export_probs()) to pick "
                        "them by the DARTS rule"
                    )
            edges += node_edges
        cells.append(CellArch(g, t, tuple(edges), space.concat()))
    return Architecture(space, tuple(cells), probs, prov)


def _convert_probabilities(
    space: SpaceConfig, probabilities: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    """NNI's ``export_probs()`` as pflnas probabilities ``{pflnas label: {op: p}}``.

    NNI's differentiable ``Cell`` reports ``cell3/2_0`` over the real ops, leaving out its own "no edge"
    weight: that weight becomes ``none`` when the space has it, else the rest is renormalised.
    """
    if not isinstance(probabilities, Mapping):
        raise ArchitectureError("NNI probabilities: expected a dict of {label: {op: probability}}")
    has_none = next((op for op in space.ops if get_op(op).is_zero), None)
    out: dict[str, dict[str, float]] = {}
    for label, dist in probabilities.items():
        if not isinstance(dist, Mapping):
            raise ArchitectureError(f"NNI probabilities[{label!r}] must be a dict of op -> probability")
        dist = {str(k): float(v) for k, v in dist.items()}
        if "/" in str(label):
            group, _, edge = str(label).partition("/")
            try:
                node, src = (int(x) for x in edge.split("_"))
            except ValueError:
                raise ArchitectureError(
                    f"NNI probabilities: unknown label {label!r} (expected e.g. 'cell0/2_0')"
                ) from None
            label = edge_label(group, node, src)
            rest = 1.0 - sum(dist.values())
            if has_none is not None:
                dist[has_none] = max(rest, 0.0)
            total = sum(dist.values())
            dist = {op: p / total for op, p in dist.items()} if total > 0 else dist
        out[str(label)] = {op: round(p, 6) for op, p in dist.items() if not math.isnan(p)}
    return out
