"""Import DARTS-family genotype strings (as DARTS / PC-DARTS print them) as architecture records.

``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6), reduce=[...], reduce_concat=[2, 3,
4, 5])`` is parsed with :func:`ast.parse` and a walk that accepts only literal shapes -- strings, ints,
tuples and lists of them, and ``range(a, b)`` -- and is never evaluated. Pairs ``2(i-2)`` and
``2(i-2)+1`` of each list are the two edges of node ``i`` (2..5), as in DARTS' ``Cell._compile``.
"""

from __future__ import annotations

import ast
from typing import Any

from pflnas.arch.record import Architecture, CellArch, Edge
from pflnas.errors import ArchitectureError, ConfigError
from pflnas.names import name_hint
from pflnas.spaces.config import SpaceConfig, load_space

GenotypeCells = tuple[list[tuple[str, int]], list[int], list[tuple[str, int]], list[int]]

_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")
_NODES = range(2, 6)  # DARTS cells: inputs 0, 1; intermediate nodes 2..5
_MAX_CHARS = 100_000
_MAX_NODE_ID = 1_000  # far above any cell's node ids, far below what range() can count


def _fail(message: str) -> ArchitectureError:
    return ArchitectureError(f"genotype: {message}")


def _int(node: ast.AST, where: str) -> int:
    """An integer literal, possibly negated (a loop, not recursion: ``- - - 1`` may nest deeply)."""
    sign, inner = 1, node
    while isinstance(inner, ast.UnaryOp) and isinstance(inner.op, ast.USub):
        sign, inner = -sign, inner.operand
    if isinstance(inner, ast.Constant) and type(inner.value) is int:
        return sign * inner.value
    raise _fail(f"{where} must be an integer literal, got {_describe(node)}")


def _describe(node: ast.AST) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # pragma: no cover - unparse handles every parsed node
        text = type(node).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _edges(node: ast.AST, field: str) -> list[tuple[str, int]]:
    if not isinstance(node, (ast.List, ast.Tuple)):
        raise _fail(f"{field} must be a list of (op, input) pairs, got {_describe(node)}")
    out = []
    for k, item in enumerate(node.elts):
        where = f"{field}[{k}]"
        if not isinstance(item, (ast.Tuple, ast.List)) or len(item.elts) != 2:
            raise _fail(f"{where} must be an (op, input) pair, got {_describe(item)}")
        op, src = item.elts
        if not (isinstance(op, ast.Constant) and isinstance(op.value, str)):
            raise _fail(f"{where}: the op must be a string literal, got {_describe(op)}")
        out.append((op.value, _int(src, f"{where}: the input index")))
    return out


def _concat(node: ast.AST, field: str) -> list[int]:
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_int(e, f"{field} entries") for e in node.elts]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "range"
        and not node.keywords
        and 1 <= len(node.args) <= 3
    ):
        args = [_int(a, f"{field}: range arguments") for a in node.args]
        if len(args) == 3 and args[2] == 0:
            raise _fail(f"{field}: range step must not be zero")
        # bounds first: len(range(0, 10**30)) overflows
        if any(abs(a) > _MAX_NODE_ID for a in args) or len(range(*args)) > 2 * len(_NODES):
            raise _fail(
                f"{field} is {_describe(node)}, far more nodes than a DARTS cell has "
                f"({_NODES[0]}..{_NODES[-1]})"
            )
        nodes = range(*args)
        return list(nodes)
    raise _fail(f"{field} must be a list of node ids or range(a, b), got {_describe(node)}")


def parse_genotype(text: str) -> GenotypeCells:
    """``(normal, normal_concat, reduce, reduce_concat)`` of a genotype string; checks its shape only.

    Accepts ``Genotype(normal=..., ...)`` with keyword or positional fields (namedtuple order). Raises
    :class:`ArchitectureError` with one line for anything else.
    """
    if not isinstance(text, str) or not text.strip():
        raise _fail(
            "empty; expected Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)"
        )
    if len(text) > _MAX_CHARS:
        raise _fail(f"{len(text)} characters is far too long for a genotype")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise _fail(f"not a valid expression ({exc.msg}, column {exc.offset})") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        raise _fail(f"not a valid expression ({type(exc).__name__})") from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"):
        raise _fail(f"expected Genotype(...), got {_describe(call)}")
    if len(call.args) > len(_FIELDS):
        raise _fail(f"Genotype takes {len(_FIELDS)} fields, got {len(call.args)} positional arguments")
    values: dict[str, ast.AST] = dict(zip(_FIELDS, call.args, strict=False))
    for kw in call.keywords:
        if kw.arg is None:
            raise _fail("** arguments are not allowed")
        if kw.arg not in _FIELDS:
            raise _fail(f"unknown field {kw.arg!r}; a DARTS genotype has {', '.join(_FIELDS)}")
        if kw.arg in values:
            raise _fail(f"field {kw.arg!r} given twice")
        values[kw.arg] = kw.value
    missing = [f for f in _FIELDS if f not in values]
    if missing:
        raise _fail(f"missing field(s) {', '.join(missing)}")
    return (
        _edges(values["normal"], "normal"),
        _concat(values["normal_concat"], "normal_concat"),
        _edges(values["reduce"], "reduce"),
        _concat(values["reduce_concat"], "reduce_concat"),
    )


def _cell(space: SpaceConfig, name: str, pairs: list[tuple[str, int]], concat: list[int]) -> CellArch:
    want = 2 * len(_NODES)
    if len(pairs) != want:
        raise _fail(
            f"{name} has {len(pairs)} (op, input) pairs; a DARTS cell has {want} (2 for each of nodes 2..5)"
        )
    edges = []
    for k, (op, src) in enumerate(pairs):
        node = _NODES[0] + k // 2
        if op not in space.ops:
            raise _fail(
                f"{name}[{k}]: op {op!r}{name_hint(op, space.ops)} is not a candidate of space "
                f"{space.name!r} ({', '.join(space.ops)})"
            )
        if not 0 <= src < node:
            raise _fail(f"{name}[{k}]: input {src} of node {node} must be one of 0..{node - 1}")
        edges.append(Edge(node, src, op))
    if concat != list(_NODES):
        raise _fail(f"{name}_concat is {concat}; pflnas DARTS cells concatenate nodes {list(_NODES)}")
    return CellArch(name, name, tuple(edges), tuple(concat))


def architecture_from_genotype(text: str, space: str | SpaceConfig = "darts") -> Architecture:
    """A shared-alpha record of ``space`` (default: the DARTS space) holding the genotype's two cells.

    ``probabilities`` is empty (a genotype carries none); ``provenance`` records the source string.
    """
    normal, normal_concat, reduce, reduce_concat = parse_genotype(text)
    if not isinstance(space, SpaceConfig):
        try:
            space = load_space(space)
        except ConfigError as exc:
            raise ArchitectureError(str(exc)) from None
    if space.kind != "darts_cell" or space.nodes != len(_NODES):
        raise _fail(
            f"space {space.name!r} is not a DARTS-cell space with 4 nodes "
            f"(kind {space.kind}, {space.nodes} nodes)"
        )
    if space.alpha_mode != "shared":
        space = space.replace(alpha_mode="shared")
    cells = (_cell(space, "normal", normal, normal_concat), _cell(space, "reduce", reduce, reduce_concat))
    provenance: dict[str, Any] = {"source": "darts-genotype", "genotype": text.strip()}
    try:
        return Architecture(space, cells, {}, provenance)
    except ArchitectureError as exc:
        raise _fail(str(exc)) from None
