"""Readable architecture-weight labels: ``<group>.edge<node><-<source>``, e.g. ``cell3.edge2<-0``.

A label names a choice of the space, so it lives with the spaces: the supernet, the records, the latency
positions and the analysis all read it from here, below each of them.
"""

from __future__ import annotations

import re

BLOCK_CHOICE = "op"  # the key of a block's choice: labels read ``block3.op``
_LABEL = re.compile(r"^(?P<group>[A-Za-z_][A-Za-z0-9_]*)\.edge(?P<node>\d+)<-(?P<source>\d+)$")


def edge_key(node: int, source: int) -> str:
    """The per-edge key inside a group (a valid module attribute name: no dots)."""
    return f"edge{node}<-{source}"


def edge_label(group: str, node: int, source: int) -> str:
    return f"{group}.{edge_key(node, source)}"


def parse_label(label: str) -> tuple[str, int, int]:
    """``'cell3.edge2<-0'`` -> ``('cell3', 2, 0)``; raises ValueError on anything else."""
    m = _LABEL.match(label)
    if not m:
        raise ValueError(f"not an edge label: {label!r} (expected e.g. 'cell3.edge2<-0')")
    return m["group"], int(m["node"]), int(m["source"])
