"""Typed experiment configuration: frozen dataclasses, loaded from YAML with ``key=value`` overrides.

Precedence (lowest first): dataclass defaults < ``--preset`` < ``--config FILE`` < CLI flags < ``--set``.
Unknown keys and wrong types are rejected with one clear line naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from pflnas.errors import ConfigError


@dataclass(frozen=True)
class SpaceSection:
    """Which search space, and overrides of its defaults (``None`` keeps the space's value)."""

    name: str = "cell_v1"
    alpha_mode: str | None = None
    init_channels: int | None = None
    layers: int | None = None
    nodes: int | None = None
    ops: tuple[str, ...] | None = None
    skeleton: dict[str, Any] | None = None  # block spaces: merged over the space's skeleton


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "cifar10"
    data_dir: str | None = None
    subset: int | None = None  # use only this many training images (None: all)
    train_portion: float = 0.5  # share of the (subset of the) training set for weights; rest for alphas
    batch_size: int = 64
    eval_batch_size: int = 256
    eval_limit: int | None = None  # evaluate on at most this many held-out images per epoch (None: all)


@dataclass(frozen=True)
class WeightOptimConfig:
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0


@dataclass(frozen=True)
class ArchOptimConfig:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 1e-3


@dataclass(frozen=True)
class StrategyConfig:
    name: str = "darts"  # darts | darts2 (second order, unrolled) | gdas | pcdarts
    warmup_epochs: int | None = None  # epochs before the first architecture step (None: the strategy's)


@dataclass(frozen=True)
class RunConfig:
    epochs: int = 50
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = False  # bf16 autocast
    channels_last: bool = False
    deterministic: bool | None = None  # None: deterministic on CPU (exact resume), cuDNN autotune on GPU
    share_param_free: bool = True  # compute parameter-free ops once per source node
    progress: bool = True
    threads: int | None = None  # torch CPU threads (None: torch's default)


@dataclass(frozen=True)
class CollapseConfig:
    """When the live diagnostics flag a search as collapsed (see :mod:`pflnas.arch.collapse`)."""

    max_skip_per_cell: int = 2  # a derived cell keeping more skip ops (P-DARTS caps normal cells at 2)
    max_skip_share: float = 0.5  # block spaces: share of blocks choosing a skip op
    max_skip_mass: float = 0.5  # mean probability of the skip ops over all choices
    min_entropy: float = 0.05  # mean normalised entropy (0: one-hot alphas, 1: uniform)


@dataclass(frozen=True)
class SearchConfig:
    space: SpaceSection = field(default_factory=SpaceSection)
    data: DataConfig = field(default_factory=DataConfig)
    weights: WeightOptimConfig = field(default_factory=WeightOptimConfig)
    arch: ArchOptimConfig = field(default_factory=ArchOptimConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    run: RunConfig = field(default_factory=RunConfig)
    collapse: CollapseConfig = field(default_factory=CollapseConfig)


T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-friendly dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    raise ConfigError(f"{key}: unsupported type {tp}")


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        dotted = ", ".join(f"{prefix}.{k}" if prefix else k for k in unknown)
        raise ConfigError(f"unknown config key(s) {dotted}; valid keys here: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(item: str) -> dict[str, Any]:
    """``'a.b=3'`` -> ``{'a': {'b': 3}}``; the value is parsed as YAML (``true``, ``[1, 2]``, ``null``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. run.epochs=10)")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    out: dict[str, Any] = {}
    cur = out
    parts = key.split(".")
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return data


def preset_path(name: str) -> Path:
    path = Path(str(resources.files("pflnas.presets"))) / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"unknown preset {name!r}; available presets: {', '.join(names)}")
    return path


def build_config(cls: type[T], layers: list[dict[str, Any]], overrides: list[str] = ()) -> T:  # type: ignore[assignment]
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    for item in overrides:
        merged = deep_merge(merged, parse_override(item))
    return from_dict(cls, merged)


def validate_search_config(cfg: SearchConfig) -> None:
    """Range checks that types alone cannot express."""
    checks = [
        (cfg.run.epochs >= 1, f"run.epochs must be >= 1, got {cfg.run.epochs}"),
        (cfg.data.batch_size >= 1, f"data.batch_size must be >= 1, got {cfg.data.batch_size}"),
        (cfg.data.eval_batch_size >= 1, f"data.eval_batch_size must be >= 1, got {cfg.data.eval_batch_size}"),
        (
            0.0 < cfg.data.train_portion < 1.0,
            f"data.train_portion must be in (0, 1), got {cfg.data.train_portion}",
        ),
        (cfg.data.subset is None or cfg.data.subset >= 2, f"data.subset must be >= 2, got {cfg.data.subset}"),
        (cfg.weights.lr > 0, f"weights.lr must be > 0, got {cfg.weights.lr}"),
        (cfg.weights.lr_min >= 0, f"weights.lr_min must be >= 0, got {cfg.weights.lr_min}"),
        (cfg.weights.grad_clip > 0, f"weights.grad_clip must be > 0, got {cfg.weights.grad_clip}"),
        (cfg.arch.lr > 0, f"arch.lr must be > 0, got {cfg.arch.lr}"),
        (cfg.run.threads is None or cfg.run.threads >= 1, f"run.threads must be >= 1, got {cfg.run.threads}"),
        (
            cfg.strategy.warmup_epochs is None or 0 <= cfg.strategy.warmup_epochs < cfg.run.epochs,
            f"strategy.warmup_epochs must be in [0, run.epochs), got {cfg.strategy.warmup_epochs}",
        ),
        (
            cfg.collapse.max_skip_per_cell >= 0,
            f"collapse.max_skip_per_cell must be >= 0, got {cfg.collapse.max_skip_per_cell}",
        ),
        *[
            (
                0.0 <= getattr(cfg.collapse, key) <= 1.0,
                f"collapse.{key} must be in [0, 1], got {getattr(cfg.collapse, key)}",
            )
            for key in ("max_skip_share", "max_skip_mass", "min_entropy")
        ],
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
