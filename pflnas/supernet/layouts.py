"""Converting a cell supernet's state_dict (DARTS or NB201 cells) between the per-edge and batched layouts.

The layouts hold the same numbers in other places: a wide op of the batched layout
(:mod:`pflnas.supernet.batched`) is its edges' tensors joined by the rule each of its tensors declares, and
a parameter-free op's BatchNorm statistics, kept once per source node in the ``per_source`` and ``batched``
layouts, are equal on every edge of the ``per_edge`` layout (the same op on the same input). Every other
entry (stem, preprocessing, classifier, alphas, PC-DARTS' edge-normalisation weights) is the same in all
layouts. With PC-DARTS' partial channels the ops are narrower but the keys are the same, and the bypass
max-pool has no state, so the same conversion applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch
from torch import Tensor

from pflnas.errors import ConfigError
from pflnas.spaces.labels import edge_key
from pflnas.supernet.batched import CAT, FIRST, BatchedNodes
from pflnas.supernet.cells import SearchCell
from pflnas.supernet.network import Supernet

_SOURCE_OPS = re.compile(r"^(?P<head>.*\.source_ops\.\d+\.)(?P<rest>.*)$")
_OWN_FREE = re.compile(r"^(?P<cell>.*)\.edges\.edge\d+<-(?P<src>\d+)\.own_free\.(?P<rest>.*)$")


def _batched_cells(net: Supernet) -> Iterator[tuple[str, SearchCell, BatchedNodes]]:
    if net.layout != "batched":
        raise ConfigError(f"the template supernet must have the batched layout, not {net.layout}")
    for prefix, module in net.named_modules():
        if isinstance(module, SearchCell) and module.batched is not None:
            yield prefix, module, module.batched


def _join(parts: list[Tensor], rule: str) -> Tensor:
    if rule == CAT:
        return torch.cat(parts, 0)
    assert rule == FIRST
    return parts[0].clone()


def _split(wide: Tensor, rule: str, m: int) -> list[Tensor]:
    if rule == CAT:
        return [t.clone() for t in wide.chunk(m, 0)]
    assert rule == FIRST
    return [wide.clone() for _ in range(m)]


def _wide_entries(net: Supernet) -> Iterator[tuple[str, list[str], str]]:
    """``(wide key, [per-edge keys in edge order], rule)`` for every tensor of every wide op of ``net``."""
    for prefix, cell, nodes in _batched_cells(net):
        for src, edges in nodes.out_edges.items():
            keys = [edge_key(*cell.edge_list[i]) for i in edges]
            for op, wide in nodes.fans[str(src)].wide.items():
                for suffix, (edge_suffix, rule) in wide.rules.items():
                    per_edge = [f"{prefix}.edges.{k}.trainable.{op}.{edge_suffix}" for k in keys]
                    yield f"{prefix}.batched.fans.{src}.wide.{op}.{suffix}", per_edge, rule


def to_batched(state: dict[str, Tensor], net: Supernet) -> dict[str, Tensor]:
    """The state of a ``per_edge`` or ``per_source`` supernet as a state of ``net`` (batched, same space)."""
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for key, parts, rule in _wide_entries(net):
        missing = [p for p in parts if p not in state]
        if missing:
            raise ConfigError(f"not a per-edge state of this supernet: {missing[0]} is missing")
        out[key] = _join([state[p] for p in parts], rule)
        used.update(parts)
    for key, value in state.items():
        if key in used:
            continue
        own = _OWN_FREE.match(key)
        if own:  # per_edge: the same statistics on every edge leaving the source; keep one copy
            out.setdefault(f"{own['cell']}.source_ops.{own['src']}.{own['rest']}", value.clone())
        else:
            out[key] = value
    return out


def from_batched(state: dict[str, Tensor], net: Supernet, layout: str = "per_source") -> dict[str, Tensor]:
    """``state`` of the batched supernet ``net`` as a state of the same space's ``layout`` supernet
    (``per_source`` or ``per_edge``)."""
    if layout not in ("per_source", "per_edge"):
        raise ConfigError(f"from_batched converts to per_source or per_edge, not {layout}")
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for key, parts, rule in _wide_entries(net):
        out.update(zip(parts, _split(state[key], rule, len(parts))))
        used.add(key)
    fans: dict[str, list[str]] = {}  # "<cell>.source_ops.<src>." -> the keys of the edges leaving it
    if layout == "per_edge":
        for prefix, cell, nodes in _batched_cells(net):
            for src, edges in nodes.out_edges.items():
                keys = [edge_key(*cell.edge_list[i]) for i in edges]
                fans[f"{prefix}.source_ops.{src}."] = [f"{prefix}.edges.{k}.own_free." for k in keys]
    for key, value in state.items():
        if key in used:
            continue
        shared = _SOURCE_OPS.match(key)
        if shared and shared["head"] in fans:
            for edge in fans[shared["head"]]:
                out[edge + shared["rest"]] = value.clone()
        else:
            out[key] = value
    return out
