"""Nested dicts (YAML layers, overrides) merged and turned into frozen dataclasses, rejecting unknown keys and
wrong types with one line naming the key. Generic: the search, retrain and study configs all load through it.

Precedence of :func:`build_config` (lowest first): the layers in order < typed values < ``key=value`` strings.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union

from pflnas.errors import ConfigError
from pflnas.parsing import load_yaml, parse_yaml_value

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


_EXPONENT_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


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
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            value = float(value)  # PyYAML (YAML 1.1) reads 1e-4, without a dot, as a string
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            return number
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
    odd = [k for k in data if not isinstance(k, str)]
    if odd:
        raise ConfigError(f"{where}: key {odd[0]!r} is not a name; valid keys here: {', '.join(names)}")
    unknown = sorted(set(data) - set(names))
    if unknown:
        dotted = ", ".join(_printable(f"{prefix}.{k}" if prefix else k) for k in unknown)
        raise ConfigError(f"unknown config key(s) {dotted}; valid keys here: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def _printable(name: str) -> str:
    """``name`` as typed, or its repr when it holds newlines or other unprintable characters."""
    return name if name.isprintable() else repr(name)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def nest(key: str, value: Any) -> dict[str, Any]:
    """``('a.b', 3)`` -> ``{'a': {'b': 3}}``: a dotted key and its typed value as a layer to merge."""
    out: dict[str, Any] = {}
    cur = out
    parts = key.split(".")
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value
    return out


def parse_override(item: str) -> dict[str, Any]:
    """``'a.b=3'`` -> ``{'a': {'b': 3}}``; the value is parsed as YAML (``true``, ``[1, 2]``, ``null``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. run.epochs=10)")
    return nest(key, parse_yaml_value(raw, f"override {key}"))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is ``{}``)."""
    p = Path(path)
    data = load_yaml(p)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return data


def build_config(
    cls: type[T],
    layers: Sequence[dict[str, Any] | None],
    overrides: Sequence[str] = (),
    typed: Mapping[str, Any] | None = None,
) -> T:
    """``cls`` from ``layers`` merged in order, then ``typed`` (dotted key -> value, e.g. the flags given on
    a command line), then the ``key=value`` ``overrides`` (``--set``), each over the one before."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer is None:  # an empty YAML document
            continue
        if not isinstance(layer, dict):
            raise ConfigError(f"a config must be a mapping of sections, got {type(layer).__name__}")
        merged = deep_merge(merged, layer)
    for key, value in (typed or {}).items():
        merged = deep_merge(merged, nest(key, value))
    for item in overrides:
        merged = deep_merge(merged, parse_override(item))
    return from_dict(cls, merged)
