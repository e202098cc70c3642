"""Trained derived networks: read a retrain checkpoint into the network it trained.

A retrain checkpoint is a torch file, read with ``weights_only=True``, holding a dict with at least
``"model"`` (the network's ``state_dict``). ``pflnas retrain`` also stores ``"network"``
(:meth:`NetworkConfig.to_dict`), ``"arch"`` (the found.json it trained) and ``"ema"``; when present they
are used: the network is rebuilt from ``"network"`` (settings may repeat it, never contradict it) and
``"arch"`` must be the architecture the caller passes. Auxiliary-head weights are optional both ways.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from pflnas.arch.record import Architecture
from pflnas.errors import ArchitectureError, ConfigError, PflnasError
from pflnas.models import NetworkConfig, build_from_config, resolve_network_config
from pflnas.train.checkpoint import load_checkpoint

AUX_PREFIX = "auxiliary_head."
# settings that fix the network's shapes; a checkpoint's "network" decides them
_SHAPE_FIELDS = ("dataset", "num_classes", "in_channels", "init_channels", "layers")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The dict of a retrain checkpoint (on the CPU); anything else raises one clear line."""
    state = load_checkpoint(path)
    if not isinstance(state.get("model"), Mapping):
        raise PflnasError(f"checkpoint {path} is not a pflnas retrain checkpoint (no 'model' state dict)")
    return state


def checkpoint_network_config(
    arch: Architecture,
    checkpoint: Mapping[str, Any] | None,
    *,
    dataset: str | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    init_channels: int | None = None,
    layers: int | None = None,
    auxiliary: bool = False,
    drop_path: float = 0.0,
    origin: str = "the checkpoint",
) -> NetworkConfig:
    """The network config for ``arch``: the checkpoint's ``"network"`` if it has one, else the settings.

    ``None`` settings mean "the checkpoint's, or the default". Settings that contradict the checkpoint's
    network raise :class:`ConfigError`; ``auxiliary`` and ``drop_path`` are always the caller's.
    """
    requested = dict(
        dataset=dataset,
        num_classes=num_classes,
        in_channels=in_channels,
        init_channels=init_channels,
        layers=layers,
    )
    stored = None if checkpoint is None else checkpoint.get("network")
    if stored is not None:
        try:
            saved = NetworkConfig(**stored)
        except TypeError:
            raise PflnasError(f"{origin} has a malformed 'network' entry: {stored!r}") from None
        conflicts = [
            f"{k}={v!r} (the checkpoint has {getattr(saved, k)!r})"
            for k, v in requested.items()
            if v is not None and v != getattr(saved, k)
        ]
        if conflicts:
            raise ConfigError(
                f"{'; '.join(conflicts)} contradicts the network stored in {origin}; leave it out"
            )
        requested = {k: getattr(saved, k) for k in _SHAPE_FIELDS}
    if requested["dataset"] is None:
        requested["dataset"] = "cifar10"
    return resolve_network_config(arch, **requested, auxiliary=auxiliary, drop_path=drop_path)


def check_checkpoint_arch(arch: Architecture, checkpoint: Mapping[str, Any], origin: str) -> None:
    """Raise unless the checkpoint's ``"arch"`` (if it stores one) has the space and the cells (or
    blocks) of ``arch``."""
    stored = checkpoint.get("arch")
    if stored is None:
        return
    mine = arch.to_dict()
    body = "blocks" if arch.space.is_block else "cells"
    if not isinstance(stored, Mapping) or any(stored.get(k) != mine[k] for k in ("space", body)):
        raise ArchitectureError(f"{origin} was trained on another architecture than the one given")


def load_network_state(
    model: nn.Module, state_dict: Mapping[str, Any], origin: str, network: str = "this network"
) -> None:
    """Load ``state_dict`` strictly, except that auxiliary-head weights may be missing or extra.

    A key or shape mismatch raises :class:`ArchitectureError` with one line naming a few of them.
    """
    own = model.state_dict()
    theirs = {k: v for k, v in state_dict.items() if isinstance(v, Tensor)}
    main = {k for k in own if not k.startswith(AUX_PREFIX)}
    given = {k for k in theirs if not k.startswith(AUX_PREFIX)}
    shape = sorted(k for k in main & given if own[k].shape != theirs[k].shape)
    problems = [
        _some("missing", sorted(main - given)),
        _some("unexpected", sorted(given - main)),
        _some("wrong-shape", [f"{k} {list(theirs[k].shape)} vs {list(own[k].shape)}" for k in shape]),
    ]
    problems = [p for p in problems if p]
    if problems:
        raise ArchitectureError(
            f"{origin} does not fit {network} ({'; '.join(problems)}); was it trained with another "
            "architecture, width, depth or class count?"
        )
    usable = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)


def _some(what: str, keys: list[str], shown: int = 2) -> str:
    if not keys:
        return ""
    more = f", ... ({len(keys)} in all)" if len(keys) > shown else ""
    return f"{what} keys: {', '.join(keys[:shown])}{more}"


def load_trained_network(
    arch: Architecture,
    checkpoint: str | Path | None = None,
    *,
    ema: bool = False,
    **settings: Any,
) -> tuple[nn.Module, NetworkConfig]:
    """Build the network of ``arch`` and load a retrain checkpoint's weights into it.

    ``settings`` are those of :func:`checkpoint_network_config`. Without a checkpoint the weights stay
    randomly initialised. ``ema`` loads the checkpoint's EMA weights instead of ``"model"``. The network
    is returned in training mode, like :func:`~pflnas.models.build_network`'s.
    """
    if checkpoint is None:
        if ema:
            raise ConfigError("EMA weights need a checkpoint")
        config = checkpoint_network_config(arch, None, **settings)
        return build_from_config(arch, config), config
    origin = f"checkpoint {checkpoint}"
    state = read_checkpoint(checkpoint)
    check_checkpoint_arch(arch, state, origin)
    config = checkpoint_network_config(arch, state, origin=origin, **settings)
    weights = state["model"]
    if ema:
        if not isinstance(state.get("ema"), Mapping):
            raise PflnasError(f"{origin} holds no EMA weights")
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items()}
    model = build_from_config(arch, config)
    network = (
        f"{type(model).__name__} (C={config.init_channels}, layers={config.layers}, "
        f"{config.num_classes} classes)"
    )
    load_network_state(model, weights, origin, network)
    return model, config
