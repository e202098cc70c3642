"""A grouped supernet's state per seed: converters to and from N ``per_source`` DARTS supernets' states,
each seed's probabilities and edge strengths (for ``derive_architecture``), and per-seed gradient norms and
clipping.

A grouped tensor holds seed s's numbers in the s-th of N equal blocks along dim 0
(:func:`~pflnas.supernet.grouped.seed_blocks`). How each block relates to the per-seed state is one of:
conv weights and BatchNorm tensors are concatenated (``CAT``: seed s's ``[C, ...]`` is rows
``[s*C, (s+1)*C)``), the classifier and PC-DARTS' edge-normalisation parameters are stacked (``STACK``: a
leading seed dim), each alpha group stacks its choices and then the seeds (``ALPHAS``), and
``num_batches_tracked`` is one count every seed shares (``FIRST``: all seeds run the same number of
forwards).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from pflnas.errors import ConfigError
from pflnas.spaces.labels import edge_key
from pflnas.supernet.grouped import GroupedSupernet, seed_blocks

CAT, STACK, ALPHAS, FIRST = "cat", "stack", "alphas", "first"


def _entries(grouped: GroupedSupernet) -> Iterator[tuple[str, list[str], str]]:
    """``(grouped key, per-seed keys, rule)`` for every entry of the grouped state_dict."""
    choices = grouped.space.choice_keys()
    for key in grouped.state_dict():
        if key.startswith("arch."):
            yield key, [f"{key}.{c}" for c in choices], ALPHAS
        elif key.startswith(("classifier.", "edge_norm.")):
            yield key, [key], STACK
        elif key.endswith("num_batches_tracked"):
            yield key, [key], FIRST
        else:
            yield key, [key], CAT


def _join(parts: list[list[Tensor]], rule: str, key: str) -> Tensor:
    """One grouped tensor from ``parts[s]``, seed s's tensors of this entry."""
    if rule == ALPHAS:
        return torch.stack([torch.stack(p) for p in parts])
    tensors = [p[0] for p in parts]
    if rule == FIRST:
        if any(not torch.equal(t, tensors[0]) for t in tensors):
            raise ConfigError(f"the seeds' {key} differ ({[t.item() for t in tensors]}); they must be equal")
        return tensors[0].clone()
    return torch.stack(tensors) if rule == STACK else torch.cat(tensors)


def _split(value: Tensor, rule: str, seeds: int) -> list[list[Tensor]]:
    """``[seed][per-seed key]`` tensors of one grouped entry (the inverse of :func:`_join`)."""
    if rule == FIRST:
        return [[value.clone()] for _ in range(seeds)]
    if rule == ALPHAS:
        return [[row.clone() for row in block] for block in value]
    if rule == STACK:
        return [[block.clone()] for block in value]
    return [[block.clone()] for block in value.chunk(seeds, 0)]


def to_grouped(state_dicts: list[dict[str, Tensor]], grouped: GroupedSupernet) -> dict[str, Tensor]:
    """The states of ``grouped.seeds`` ``per_source`` DARTS supernets of ``grouped.space`` (seed s's at
    index s) as one state of ``grouped``."""
    if len(state_dicts) != grouped.seeds:
        raise ConfigError(f"the grouped supernet has {grouped.seeds} seeds; got {len(state_dicts)} states")
    entries = list(_entries(grouped))
    expected = {k for _, keys, _ in entries for k in keys}
    for s, state in enumerate(state_dicts):
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or extra:
            bad = f"{missing[0]} is missing" if missing else f"{extra[0]} is unexpected"
            raise ConfigError(f"state {s} is not a per_source supernet state of this space: {bad}")
    return {
        key: _join([[st[k] for k in keys] for st in state_dicts], rule, key) for key, keys, rule in entries
    }


def from_grouped(state: dict[str, Tensor], grouped: GroupedSupernet) -> list[dict[str, Tensor]]:
    """``state`` of ``grouped`` as ``grouped.seeds`` states of ``per_source`` DARTS supernets."""
    out: list[dict[str, Tensor]] = [{} for _ in range(grouped.seeds)]
    for key, keys, rule in _entries(grouped):
        if key not in state:
            raise ConfigError(f"not a state of this grouped supernet: {key} is missing")
        for seed_state, values in zip(out, _split(state[key], rule, grouped.seeds)):
            seed_state.update(zip(keys, values))
    return out


def _check_seed(grouped: GroupedSupernet, seed: int) -> None:
    if not 0 <= seed < grouped.seeds:
        raise ConfigError(
            f"seed index {seed} is out of range for a grouped supernet of {grouped.seeds} seeds"
        )


@torch.no_grad()
def seed_probabilities(grouped: GroupedSupernet, seed: int) -> dict[str, dict[str, float]]:
    """Seed ``seed``'s softmax of the alphas, as :meth:`Supernet.probabilities` gives it (``{label: {op:
    probability}}``), for ``derive_architecture``."""
    _check_seed(grouped, seed)
    out = {}
    choices = grouped.space.choice_keys()
    for group, alphas in grouped.arch.items():
        ops = grouped.space.group_ops(group)
        for key, row in zip(choices, alphas[seed]):
            out[f"{group}.{key}"] = dict(zip(ops, torch.softmax(row.detach().float(), dim=-1).tolist()))
    return out


@torch.no_grad()
def seed_strengths(grouped: GroupedSupernet, seed: int) -> dict[str, float]:
    """Seed ``seed``'s edge-normalisation weights, as :meth:`Supernet.edge_strengths` gives them (``{edge
    label: weight}``, empty without edge normalisation), for ``derive_architecture``."""
    _check_seed(grouped, seed)
    out: dict[str, float] = {}
    for group in grouped.edge_norm or {}:
        scales = grouped.edge_scales(group)
        assert scales is not None
        for (n, src), w in zip(grouped.space.edges(), scales[seed].float().tolist()):
            out[f"{group}.{edge_key(n, src)}"] = w
    return out


@torch.no_grad()
def grouped_grad_norms(grouped: GroupedSupernet) -> Tensor:
    """``[N]``: each seed's total 2-norm of the weight gradients (its blocks of every weight parameter),
    the norm ``clip_grad_norm_`` would compute on that seed's separate supernet."""
    squares = [
        seed_blocks(p.grad, grouped.seeds).square().sum(1)
        for p in grouped.weight_parameters()
        if p.grad is not None
    ]
    if not squares:
        return torch.zeros(grouped.seeds)
    return torch.stack(squares).sum(0).sqrt()


@torch.no_grad()
def clip_grouped_(grouped: GroupedSupernet, max_norm: float) -> Tensor:
    """Scale each seed's weight gradients as ``torch.nn.utils.clip_grad_norm_(max_norm)`` scales that seed's
    separate supernet (``min(1, max_norm / (norm + 1e-6))``); returns the ``[N]`` norms before clipping."""
    if not max_norm > 0:
        raise ConfigError(f"the gradient clipping norm must be positive, got {max_norm}")
    norms = grouped_grad_norms(grouped)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in grouped.weight_parameters():
        if p.grad is not None:
            rows = coef.to(p.grad.dtype).repeat_interleave(p.grad.shape[0] // grouped.seeds)
            p.grad.mul_(rows.view(-1, *([1] * (p.grad.dim() - 1))))
    return norms
