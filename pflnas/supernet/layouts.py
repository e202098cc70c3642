"""Converting a cell supernet's state_dict (DARTS or NB201 cells) between the per-edge and batched layouts.

The layouts hold the same numbers in other places: a wide op of the batched layout
(:mod:`pflnas.supernet.wide`) is its edges' tensors joined by the rule each of its tensors declares; a fan's
BatchNorm (:mod:`pflnas.supernet.batched`) is its wide ops' final BatchNorms, edge by edge, followed by its
pooling ops' BatchNorms, source by source; and a parameter-free op's BatchNorm statistics, kept once per
source node in the ``per_source`` layout, are equal on every edge of the ``per_edge`` layout (the same op on
the same input), so ``per_edge`` states pass through the ``per_source`` form. Every other
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
from pflnas.supernet.batched import BatchedNodes
from pflnas.supernet.cells import SearchCell
from pflnas.supernet.network import Supernet
from pflnas.supernet.wide import CAT, FIRST

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
    """``(wide key, [per_source keys in order], rule)`` for every tensor of every fan of ``net``: a wide op's
    tensors join its edges' (the fan's edges in order); the fan's BatchNorm joins, block after block, its
    wide ops' final BatchNorms (edge by edge) and then its pooling ops' (source by source)."""
    for prefix, cell, nodes in _batched_cells(net):
        for name, fan in nodes.fans.items():
            head = f"{prefix}.batched.fans.{name}"
            edges = [
                f"{prefix}.edges.{edge_key(*cell.edge_list[i])}.trainable" for i in nodes.fan_edges[name]
            ]
            for op, wide in fan.wide.items():
                for suffix, (edge_suffix, rule) in wide.rules.items():
                    yield f"{head}.wide.{op}.{suffix}", [f"{e}.{op}.{edge_suffix}" for e in edges], rule
            if fan.bn is None:
                continue
            sources = [f"{prefix}.source_ops.{s}.ops" for s in nodes.fan_sources[name]]
            blocks = [
                f"{k}.{op}.{bn}"
                for op, bn, per_edge in fan.bn_parts
                for k in (edges if per_edge else sources)
            ]
            for buf, rule in (("running_mean", CAT), ("running_var", CAT), ("num_batches_tracked", FIRST)):
                yield f"{head}.bn.{buf}", [f"{k}.{buf}" for k in blocks], rule


def to_batched(state: dict[str, Tensor], net: Supernet) -> dict[str, Tensor]:
    """The state of a ``per_edge`` or ``per_source`` supernet as a state of ``net`` (batched, same space)."""
    per_source: dict[str, Tensor] = {}
    for key, value in state.items():
        own = _OWN_FREE.match(key)
        if own:  # per_edge: the same statistics on every edge leaving the source; keep one copy
            per_source.setdefault(f"{own['cell']}.source_ops.{own['src']}.{own['rest']}", value)
        else:
            per_source[key] = value
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for key, parts, rule in _wide_entries(net):
        missing = [p for p in parts if p not in per_source]
        if missing:
            raise ConfigError(f"not a per-edge state of this supernet: {missing[0]} is missing")
        out[key] = _join([per_source[p] for p in parts], rule)
        used.update(parts)
    out.update({k: v for k, v in per_source.items() if k not in used})
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
    out.update({k: v for k, v in state.items() if k not in used})
    if layout == "per_source":
        return out
    fans: dict[str, list[str]] = {}  # "<cell>.source_ops.<src>." -> the keys of the edges leaving it
    for prefix, cell, nodes in _batched_cells(net):
        for src, edges in nodes.out_edges.items():
            keys = [edge_key(*cell.edge_list[i]) for i in edges]
            fans[f"{prefix}.source_ops.{src}."] = [f"{prefix}.edges.{k}.own_free." for k in keys]
    per_edge: dict[str, Tensor] = {}
    for key, value in out.items():
        shared = _SOURCE_OPS.match(key)
        if shared and shared["head"] in fans:
            for edge in fans[shared["head"]]:
                per_edge[edge + shared["rest"]] = value.clone()
        else:
            per_edge[key] = value
    return per_edge
