"""A search space as Optuna parameters: one categorical per discrete choice, decoded into an architecture.

The encoding is the one-shot genome's (:class:`pflnas.arch.genome.GenomeSpace`), in which every
combination of values is a valid architecture, so samplers never need repairs. Decoding goes through
:func:`~pflnas.arch.derive.derive_architecture`, so the result is always an architecture the space
validates, with the same record format as a one-shot search (see :func:`params_to_architecture`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.distributions import CategoricalDistribution
from optuna.trial import BaseTrial

from pflnas.arch.derive import derive_architecture
from pflnas.arch.genome import GenomeSpace
from pflnas.arch.record import Architecture
from pflnas.errors import ArchitectureError
from pflnas.spaces.config import SpaceConfig
from pflnas.spaces.labels import BLOCK_CHOICE, edge_label


def search_space(space: SpaceConfig) -> dict[str, CategoricalDistribution]:
    """The Optuna parameters of ``space`` in a fixed order: the one-shot genome's choices (see
    :class:`pflnas.arch.genome.GenomeSpace`).

    * NB201 cells (every edge kept): ``<group>.edge<node><-<source>`` chooses the edge's op, ``none``
      included.
    * DARTS cells (each node keeps 2 incoming edges): ``<group>.node<n>.inputs`` chooses the pair of
      sources (``"0,2"``), and ``<group>.node<n>.op0`` / ``.op1`` the op on the lower / higher of them
      (``none`` excluded, as the derivation excludes it). Ops are attached to the kept inputs rather than
      to every edge so that no parameter is inactive: changing any one value changes the architecture,
      which regularized evolution's single-choice mutation relies on.
    * Block spaces: ``<group>.op`` chooses the block's op among those valid at its stride."""
    return {key: CategoricalDistribution(values) for key, values in GenomeSpace.of(space).options.items()}


def suggest_architecture(
    trial: BaseTrial, space: SpaceConfig, provenance: dict[str, Any] | None = None
) -> Architecture:
    """Ask ``trial`` for every choice of ``space`` and return the architecture they select."""
    params = {
        name: trial.suggest_categorical(name, dist.choices) for name, dist in search_space(space).items()
    }
    return params_to_architecture(space, params, provenance)


def params_to_architecture(
    space: SpaceConfig, params: Mapping[str, Any], provenance: dict[str, Any] | None = None
) -> Architecture:
    """The architecture that a full set of parameter values selects; raises ArchitectureError otherwise.

    Derived with one-hot probabilities on the chosen ops (non-kept DARTS edges get uniform probabilities
    and zero edge strength)."""
    dists = search_space(space)
    missing = [name for name in dists if name not in params]
    if missing:
        raise ArchitectureError(
            f"parameters lack {len(missing)} choice(s) of space {space.name!r}: {missing[0]!r}"
        )
    for name, dist in dists.items():
        if params[name] not in dist.choices:
            raise ArchitectureError(
                f"parameter {name!r}: {params[name]!r} is not one of {', '.join(map(str, dist.choices))}"
            )
    probs: dict[str, dict[str, float]] = {}
    scale: dict[str, float] = {}
    for group, _ in space.alpha_groups():
        if space.is_block:
            label = f"{group}.{BLOCK_CHOICE}"
            probs[label] = _one_hot(space.group_ops(group), params[label])
            continue
        if space.keep_edges is None:
            for node, src in space.edges():
                label = edge_label(group, node, src)
                probs[label] = _one_hot(space.ops, params[label])
            continue
        for node in space.node_ids():
            sources = [int(s) for s in str(params[f"{group}.node{node}.inputs"]).split(",")]
            chosen = {src: params[f"{group}.node{node}.op{slot}"] for slot, src in enumerate(sources)}
            for src in range(node):
                label = edge_label(group, node, src)
                if src in chosen:
                    probs[label], scale[label] = _one_hot(space.ops, chosen[src]), 1.0
                else:
                    probs[label] = {op: 1.0 / len(space.ops) for op in space.ops}
                    scale[label] = 0.0
    return derive_architecture(space, probs, provenance, scale or None)


def architecture_params(arch: Architecture) -> dict[str, str]:
    """The parameter values that select ``arch`` (the inverse of :func:`params_to_architecture`): the same
    encoding as the one-shot strategies' genomes."""
    return GenomeSpace.of(arch.space).from_architecture(arch)


def _one_hot(ops: tuple[str, ...], chosen: str) -> dict[str, float]:
    return {op: 1.0 if op == chosen else 0.0 for op in ops}
