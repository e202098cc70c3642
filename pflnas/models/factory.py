"""Derived (stand-alone) networks from an architecture record: one factory, builders keyed by data.

:func:`build_network` resolves a :class:`NetworkConfig` from the record and the caller's settings, then
calls the builder registered for ``(space kind, network family)``. The family comes from the dataset
preset: ``cifar`` (small inputs, CIFAR stem) or ``imagenet`` (224x224, the downsampling stems).

Output contract (all networks): ``forward(x)`` returns the logits ``[batch, num_classes]``, except a
network built with ``auxiliary=True`` in training mode, which returns :class:`AuxOutput`
``(logits, aux_logits)``. The auxiliary head never runs in eval mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from torch import Tensor, nn

from pflnas.arch.record import Architecture
from pflnas.errors import ConfigError
from pflnas.options import DATASET_PRESETS, DatasetPreset
from pflnas.spaces.config import MAX_LAYERS


class AuxOutput(NamedTuple):
    """What a network with an auxiliary head returns in training mode."""

    logits: Tensor
    aux_logits: Tensor


@dataclass(frozen=True)
class NetworkConfig:
    """The resolved settings of one derived network (what a checkpoint needs to rebuild it).

    ``layers`` counts cells for DARTS-cell networks and cells per stage for NB201 networks;
    ``image_size`` is the input side the network is built for (and profiled at).
    """

    dataset: str
    num_classes: int
    in_channels: int
    init_channels: int
    layers: int
    auxiliary: bool
    drop_path: float
    image_size: int

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.in_channels, self.image_size, self.image_size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


NetworkFactory = Callable[[Architecture, NetworkConfig], nn.Module]


@dataclass(frozen=True)
class NetworkBuilder:
    """A registered network: its factory and defaults for one (space kind, family)."""

    kind: str
    family: str
    factory: NetworkFactory
    init_channels: int
    layers: int
    min_layers: int = 1
    auxiliary: bool = True
    drop_path: bool = True


_BUILDERS: dict[tuple[str, str], NetworkBuilder] = {}


def register_network(
    kind: str,
    family: str,
    *,
    init_channels: int,
    layers: int,
    min_layers: int = 1,
    auxiliary: bool = True,
    drop_path: bool = True,
) -> Callable[[NetworkFactory], NetworkFactory]:
    """Decorator: register the network factory for spaces of ``kind`` on datasets of ``family``."""

    def decorator(factory: NetworkFactory) -> NetworkFactory:
        key = (kind, family)
        if key in _BUILDERS:
            raise ValueError(f"a network for {key} is already registered")
        _BUILDERS[key] = NetworkBuilder(
            kind, family, factory, init_channels, layers, min_layers, auxiliary, drop_path
        )
        return factory

    return decorator


def record_dataset(arch: Architecture, default: str = "cifar10") -> str:
    """The dataset a record was found for or published on (its provenance ``dataset``), if it is a known
    preset; else ``default``. The paper's shipped networks say ``imagenet``; searches record theirs."""
    dataset = arch.provenance.get("dataset")
    return dataset if isinstance(dataset, str) and dataset in DATASET_PRESETS else default


def get_dataset_preset(name: str) -> DatasetPreset:
    try:
        return DATASET_PRESETS[name]
    except KeyError:
        known = ", ".join(DATASET_PRESETS)
        raise ConfigError(f"unknown dataset {name!r} for a network; choose one of {known}") from None


def get_builder(kind: str, family: str) -> NetworkBuilder:
    try:
        return _BUILDERS[(kind, family)]
    except KeyError:
        have = sorted(f for k, f in _BUILDERS if k == kind)
        raise ConfigError(
            f"no {family!r}-style network for {kind} spaces; available: {', '.join(have) or 'none'}"
        ) from None


# Far above any published network, low enough that a typo (layers: 1000000) is refused at once instead of
# building cells for minutes; widths within the caps are left to the memory guard.
_LIMITS = {
    "num_classes": 1_000_000,
    "in_channels": 1024,
    "init_channels": 65_536,
    "layers": MAX_LAYERS,
    "image_size": 16_384,
}


def _positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if value > _LIMITS[name]:
        raise ConfigError(f"{name} {value} is far too large (at most {_LIMITS[name]:,})")
    return value


def resolve_network_config(
    arch: Architecture,
    *,
    dataset: str = "cifar10",
    num_classes: int | None = None,
    in_channels: int | None = None,
    init_channels: int | None = None,
    layers: int | None = None,
    auxiliary: bool = False,
    drop_path: float = 0.0,
    image_size: int | None = None,
) -> NetworkConfig:
    """Fill the defaults (class count and image size from the dataset, width/depth from the builder) and
    validate. ``image_size`` overrides the preset's input side (e.g. to profile at another resolution)."""
    preset = get_dataset_preset(dataset)
    builder = get_builder(arch.space.kind, preset.family)
    fixed = arch.space.kind_spec.network_shape(arch.space)
    if fixed is not None:
        init_channels, layers = _fixed_network_shape(arch, fixed, init_channels, layers)
    init_channels = builder.init_channels if init_channels is None else init_channels
    config = NetworkConfig(
        dataset=preset.name,
        num_classes=_positive("num_classes", preset.num_classes if num_classes is None else num_classes),
        in_channels=_positive("in_channels", preset.in_channels if in_channels is None else in_channels),
        init_channels=_positive("init_channels", init_channels),
        layers=_positive("layers", builder.layers if layers is None else layers),
        auxiliary=bool(auxiliary),
        drop_path=float(drop_path),
        image_size=_positive("image_size", preset.image_size if image_size is None else image_size),
    )
    if config.layers < builder.min_layers:
        raise ConfigError(
            f"a {arch.space.kind} network needs layers >= {builder.min_layers}, got {config.layers}"
        )
    if config.auxiliary and not builder.auxiliary:
        raise ConfigError(f"{arch.space.kind} networks have no auxiliary head (set model.auxiliary=false)")
    if not 0.0 <= config.drop_path < 1.0:
        raise ConfigError(f"drop_path must be in [0, 1), got {drop_path!r}")
    if config.drop_path > 0 and not builder.drop_path:
        raise ConfigError(f"{arch.space.kind} networks do not use drop-path")
    return config


def _fixed_network_shape(
    arch: Architecture, fixed: tuple[int, int], init_channels: int | None, layers: int | None
) -> tuple[int, int]:
    """A block network's shape is fixed by its skeleton; other widths/depths are refused."""
    first, blocks = fixed
    if (init_channels is not None and init_channels != first) or (layers is not None and layers != blocks):
        raise ConfigError(
            f"{arch.space.kind} networks are fixed by the space's skeleton ({blocks} blocks, first width "
            f"{first}); leave out init_channels/layers (with a cell recipe: --set model.init_channels=null "
            "--set model.layers=null) and change the skeleton (e.g. width_mult) instead"
        )
    return first, blocks


def build_network(
    arch: Architecture,
    *,
    dataset: str = "cifar10",
    num_classes: int | None = None,
    in_channels: int | None = None,
    init_channels: int | None = None,
    layers: int | None = None,
    auxiliary: bool = False,
    drop_path: float = 0.0,
) -> nn.Module:
    """The stand-alone network of ``arch`` (see the module docstring for the output contract).

    Defaults: DARTS cells C=36, 20 layers on cifar10 and C=48, 14 layers on imagenet; NB201 cells
    C=16, 5 cells per stage. ``num_classes`` defaults to the dataset's. ``drop_path`` is the initial
    ``net.drop_path_prob`` (the training loop may schedule it, as DARTS does).
    """
    config = resolve_network_config(
        arch,
        dataset=dataset,
        num_classes=num_classes,
        in_channels=in_channels,
        init_channels=init_channels,
        layers=layers,
        auxiliary=auxiliary,
        drop_path=drop_path,
    )
    return build_from_config(arch, config)


def build_from_config(arch: Architecture, config: NetworkConfig) -> nn.Module:
    """Build from an already resolved config (e.g. one stored in a checkpoint)."""
    builder = get_builder(arch.space.kind, get_dataset_preset(config.dataset).family)
    return builder.factory(arch, config)
