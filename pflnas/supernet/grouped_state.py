"""A grouped supernet's state per seed: converters to and from N ``per_source`` cell supernets' states,
each seed's probabilities and edge strengths (for ``derive_architecture``), and optimizer states.

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
from pflnas.supernet.grouped import GroupedSupernet

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
    """The states of ``grouped.seeds`` ``per_source`` supernets of ``grouped.space`` (seed s's at
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
    """``state`` of ``grouped`` as ``grouped.seeds`` states of ``per_source`` supernets."""
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


def _param_entries(grouped: GroupedSupernet) -> dict[str, tuple[list[str], str]]:
    params = dict(grouped.named_parameters())
    return {key: (keys, rule) for key, keys, rule in _entries(grouped) if key in params}


def split_optimizer(
    grouped: GroupedSupernet,
    optimizer: torch.optim.Optimizer,
    seed_models: list[torch.nn.Module],
    seed_optimizers: list[torch.optim.Optimizer],
) -> None:
    """Set ``seed_optimizers[s]`` (over ``seed_models[s]``'s parameters) to seed s's part of ``optimizer``
    (over ``grouped``'s): per-parameter tensors shaped like the parameter by its rule, other entries (Adam's
    step count) copied; the hyper-parameters (the scheduled learning rate) copied too."""
    names = {id(p): n for n, p in grouped.named_parameters()}
    entries = _param_entries(grouped)
    seed_params = [dict(m.named_parameters()) for m in seed_models]
    for opt in seed_optimizers:
        opt.state.clear()
    for p, state in optimizer.state.items():
        keys, rule = entries[names[id(p)]]
        for name, value in state.items():
            if isinstance(value, Tensor) and value.shape == p.shape:
                parts = _split(value, rule, grouped.seeds)
            else:
                parts = [[_copy(value) for _ in keys] for _ in range(grouped.seeds)]
            for params, opt, values in zip(seed_params, seed_optimizers, parts):
                for key, v in zip(keys, values):
                    opt.state[params[key]][name] = v
    for opt in seed_optimizers:
        for seed_group, group in zip(opt.param_groups, optimizer.param_groups):
            seed_group.update({k: v for k, v in group.items() if k != "params"})


def join_optimizer(
    grouped: GroupedSupernet,
    optimizer: torch.optim.Optimizer,
    seed_models: list[torch.nn.Module],
    seed_optimizers: list[torch.optim.Optimizer],
) -> None:
    """The inverse of :func:`split_optimizer`: ``optimizer`` (over ``grouped``'s parameters) takes the
    seeds' states; entries that are not per-parameter tensors must agree between seeds."""
    entries = _param_entries(grouped)
    seed_params = [dict(m.named_parameters()) for m in seed_models]
    optimizer.state.clear()
    for gname, p in grouped.named_parameters():
        keys, rule = entries[gname]
        states = [
            [opt.state.get(params[k], {}) for k in keys] for params, opt in zip(seed_params, seed_optimizers)
        ]
        if not states[0][0]:
            continue
        joined = {}
        for name, value in states[0][0].items():
            parts = [[st[name] for st in seed] for seed in states]
            like = seed_params[0][keys[0]]
            tensor = isinstance(value, Tensor) and value.shape == like.shape
            joined[name] = _join(parts, rule, name) if tensor else _agreed(parts, name)
        optimizer.state[p] = joined
    for group, seed_group in zip(optimizer.param_groups, seed_optimizers[0].param_groups):
        group.update({k: v for k, v in seed_group.items() if k != "params"})


def _copy(value: object) -> object:
    return value.clone() if isinstance(value, Tensor) else value


def _agreed(parts: list[list[object]], name: str) -> object:
    first = parts[0][0]
    for seed in parts:
        for v in seed:
            same = torch.equal(v, first) if isinstance(v, Tensor) else v == first  # type: ignore[arg-type]
            if not same:
                raise ConfigError(f"the seeds' optimizer entries {name!r} differ; resume them separately")
    return _copy(first)
