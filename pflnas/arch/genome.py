"""Architectures as genomes: one value per independent discrete choice of a search space.

A genome is a plain ``{choice: value}`` dict in which every combination of allowed values is a valid
architecture, so sampling and mutation never need repairs. The encoding is the one of the multi-trial
search's Optuna parameters (:mod:`pflnas.multitrial.space`), so genomes of one-shot and multi-trial
searches read alike. The choice names per space kind are listed on :class:`GenomeSpace`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from pflnas.arch.derive import derive_architecture
from pflnas.arch.record import Architecture
from pflnas.errors import ArchitectureError
from pflnas.ops import get_op
from pflnas.spaces.config import SpaceConfig
from pflnas.spaces.labels import BLOCK_CHOICE, edge_label

Genome = dict[str, str]


def _pair(sources: tuple[int, ...]) -> str:
    return ",".join(str(s) for s in sources)


def genome_key(genome: Mapping[str, str]) -> str:
    """A canonical string of ``genome`` (for caching evaluations)."""
    return json.dumps(dict(sorted(genome.items())), separators=(",", ":"))


@dataclass(frozen=True)
class GenomeSpace:
    """The choices of ``space``: ``options`` maps each choice to its allowed values, in a fixed order.

    * NB201 cells (every edge kept): ``<group>.edge<node><-<source>`` is the edge's op, ``none`` included.
    * DARTS cells (each node keeps ``keep_edges`` = 2 incoming edges): ``<group>.node<n>.inputs`` is the
      set of kept sources (``"0,2"``), ``<group>.node<n>.op0`` / ``.op1`` the op on the lower / higher of
      them (``none`` excluded, as the derivation excludes it). Edges not kept contribute nothing.
    * Block spaces: ``<group>.op`` is the block's op among those valid at its stride.

    :meth:`edge_ops` turns a genome into one decision per supernet choice (the op, or ``None`` for a
    dropped edge); :meth:`to_architecture` into a validated record.
    """

    space: SpaceConfig
    options: dict[str, tuple[str, ...]]

    @classmethod
    def of(cls, space: SpaceConfig) -> GenomeSpace:
        options: dict[str, tuple[str, ...]] = {}
        real = tuple(op for op in space.ops if not get_op(op).is_zero)
        for group, _ in space.alpha_groups():
            if space.is_block:
                options[f"{group}.{BLOCK_CHOICE}"] = tuple(space.group_ops(group))
            elif space.keep_edges is None:
                for node, src in space.edges():
                    options[edge_label(group, node, src)] = tuple(space.ops)
            else:
                for node in space.node_ids():
                    keep = min(space.keep_edges, node)
                    options[f"{group}.node{node}.inputs"] = tuple(
                        _pair(c) for c in combinations(range(node), keep)
                    )
                    for slot in range(keep):
                        options[f"{group}.node{node}.op{slot}"] = real
        return cls(space, options)

    def size(self) -> int:
        """How many architectures the space holds."""
        n = 1
        for values in self.options.values():
            n *= len(values)
        return n

    def check(self, genome: Mapping[str, str]) -> None:
        """Raise ArchitectureError unless ``genome`` sets every choice to an allowed value."""
        missing = [k for k in self.options if k not in genome]
        if missing:
            raise ArchitectureError(
                f"genome lacks {len(missing)} choice(s) of space {self.space.name!r}, e.g. {missing[0]!r}"
            )
        extra = [k for k in genome if k not in self.options]
        if extra:
            raise ArchitectureError(
                f"genome has choice(s) space {self.space.name!r} lacks, e.g. {extra[0]!r}"
            )
        for key, values in self.options.items():
            if genome[key] not in values:
                raise ArchitectureError(
                    f"genome choice {key!r}: {genome[key]!r} is not one of {', '.join(values)}"
                )

    def edge_ops(self, genome: Mapping[str, str]) -> dict[str, str | None]:
        """``{supernet choice label: op}`` for every choice of every alpha group (``cell3.edge2<-0``,
        ``block3.op``); ``None`` marks a DARTS edge the candidate does not keep."""
        self.check(genome)
        space = self.space
        out: dict[str, str | None] = {}
        for group, _ in space.alpha_groups():
            if space.is_block:
                label = f"{group}.{BLOCK_CHOICE}"
                out[label] = genome[label]
                continue
            if space.keep_edges is None:
                for node, src in space.edges():
                    label = edge_label(group, node, src)
                    out[label] = genome[label]
                continue
            for node in space.node_ids():
                sources = [int(s) for s in genome[f"{group}.node{node}.inputs"].split(",")]
                chosen = {src: genome[f"{group}.node{node}.op{slot}"] for slot, src in enumerate(sources)}
                for src in range(node):
                    out[edge_label(group, node, src)] = chosen.get(src)
        return out

    def to_architecture(
        self, genome: Mapping[str, str], provenance: dict[str, Any] | None = None
    ) -> Architecture:
        """The validated record of ``genome``: one-hot probabilities on the chosen ops (uniform, and zero
        edge strength, on DARTS edges not kept), as the multi-trial search writes them."""
        probs: dict[str, dict[str, float]] = {}
        scale: dict[str, float] = {}
        for label, op in self.edge_ops(genome).items():
            group = label.split(".", 1)[0]
            ops = self.space.group_ops(group)
            if op is None:
                probs[label] = {o: 1.0 / len(ops) for o in ops}
                scale[label] = 0.0
            else:
                probs[label] = {o: 1.0 if o == op else 0.0 for o in ops}
                scale[label] = 1.0
        return derive_architecture(self.space, probs, provenance, scale or None)

    def from_architecture(self, arch: Architecture) -> Genome:
        """The genome that selects ``arch`` (the inverse of :meth:`to_architecture`)."""
        if arch.space.to_dict() != self.space.to_dict():
            raise ArchitectureError(
                f"the architecture is of space {arch.space.name!r}, not the searched {self.space.name!r} "
                "(or its resolved settings differ)"
            )
        space = self.space
        out: Genome = {}
        if space.is_block:
            out = {f"{b.name}.{BLOCK_CHOICE}": b.op for b in arch.blocks}
        else:
            for cell in arch.cells:
                if space.keep_edges is None:
                    out.update({edge_label(cell.name, e.node, e.source): e.op for e in cell.edges})
                    continue
                for node in space.node_ids():
                    edges = sorted((e for e in cell.edges if e.node == node), key=lambda e: e.source)
                    out[f"{cell.name}.node{node}.inputs"] = _pair(tuple(e.source for e in edges))
                    out.update({f"{cell.name}.node{node}.op{slot}": e.op for slot, e in enumerate(edges)})
        self.check(out)
        return out
