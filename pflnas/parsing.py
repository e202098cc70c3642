"""The one place user-editable YAML and JSON text is parsed: strict, bounded, and failing in one line.

Every config, recipe, space, study, found.json and run record goes through here, so the caps hold for all
of them: a file size cap, no key given twice, no NaN/Infinity in JSON, and for YAML a cap on how many
values the aliases expand to and how deep the structure nests (an alias bomb is a few hundred bytes that
expand to billions of values only when something walks the structure, e.g. ``dataclasses.asdict``), and no
alias that contains itself.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from pflnas.errors import ConfigError, PflnasError
from pflnas.utils_io import open_regular

# Configs, recipes, spaces and studies are a few kilobytes and a few hundred values; the caps leave room for a
# long seed list and keep the worst accepted file to about a second of parsing.
MAX_YAML_BYTES = 1024 * 1024
MAX_YAML_VALUES = 200_000  # values after expanding every alias (each alias counted at every use)
MAX_YAML_DEPTH = 64  # nesting levels; a real config has four

_YamlBase: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml parses ~5x faster when built


class YamlLimitError(yaml.YAMLError):
    """A YAML document over the expansion, depth or recursion caps (the message says which)."""


class _StrictLoader(_YamlBase):  # type: ignore[misc,valid-type]
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last silently) and
    checks the composed node graph against the caps before any Python object is built."""

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            check_yaml_graph(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base``: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: construct_mapping reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def check_yaml_graph(root: yaml.Node) -> None:
    """Raise :class:`YamlLimitError` if ``root`` expands (each alias counted at every use) to more than
    :data:`MAX_YAML_VALUES` values, nests deeper than :data:`MAX_YAML_DEPTH`, or contains itself.

    Aliases share nodes, so the walk memoises per node: it costs the size of the text, not of the expansion.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded values, depth)
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            below = [sizes[id(c)] for c in _children(node)]
            values = 1 + sum(v for v, _ in below)
            depth = 1 + max((d for _, d in below), default=0)
            if values > MAX_YAML_VALUES:
                raise YamlLimitError(
                    f"it holds more than {MAX_YAML_VALUES:,} values, counting each alias at every "
                    "use (an alias bomb?); write out fewer values"
                )
            if depth > MAX_YAML_DEPTH:
                raise YamlLimitError(f"nested more than {MAX_YAML_DEPTH} levels deep; flatten it")
            sizes[key] = (values, depth)
        elif key in on_path:
            line = node.start_mark.line + 1 if node.start_mark else "?"
            raise YamlLimitError(
                f"an alias at line {line} refers to a value that contains it; remove the alias"
            )
        elif key not in sizes:
            on_path.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in _children(node))


def _load_capped(text: str, origin: str) -> Any:
    """``yaml.load`` with the strict loader; a size or graph cap raises ConfigError, a syntax error the
    ``yaml.YAMLError`` (or RecursionError) for the caller to word."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{origin}: {len(text):,} characters is far too large (limit {MAX_YAML_BYTES:,})")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except YamlLimitError as exc:
        raise ConfigError(f"{origin}: refused: {exc}") from None


def parse_yaml(text: str, origin: str) -> Any:
    """Parse YAML text safely (no Python tags, no duplicate keys, capped expansion and depth); any problem
    is one ConfigError line naming ``origin``."""
    try:
        return _load_capped(text, origin)
    except yaml.YAMLError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        first = lines[0] if lines else "parse error"
        raise ConfigError(f"{origin}: not valid YAML ({first}{where})") from None
    except RecursionError:
        raise ConfigError(f"{origin}: YAML nested too deeply") from None


def parse_yaml_value(raw: str, origin: str) -> Any:
    """A ``key=value`` override's value parsed as YAML (``true``, ``[1, 2]``, ``null``); text that is not
    valid YAML stays a string, but the size, expansion and depth caps still refuse with one line."""
    if raw == "":
        return ""
    try:
        return _load_capped(raw, origin)
    except (yaml.YAMLError, RecursionError):
        return raw


def read_capped_text(path: str | Path, what: str, limit: int, error: type[PflnasError] = ConfigError) -> str:
    """The UTF-8 text (a leading byte-order mark dropped) of the regular file at ``path``, refused with one
    ``error`` line when it is not a regular file, is over ``limit`` bytes, or is not UTF-8."""
    with open_regular(path, what, error) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise error(f"{path}: {size:,} bytes is far too large for a {what} (limit {limit:,})")
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise error(f"cannot read {what} {path} ({exc.strerror or exc}); check its permissions") from None
    if len(data) > limit:  # it grew while being read
        raise error(f"{what} {path}: far too large (limit {limit:,} bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise error(f"{what} {path}: not a UTF-8 text file") from None


def load_yaml(path: str | Path, what: str = "config file") -> Any:
    """The parsed YAML of the file at ``path``; a missing, special, unreadable, huge or non-UTF-8 file raises
    ConfigError naming it."""
    return parse_yaml(read_capped_text(path, what, MAX_YAML_BYTES), str(path))


# --- JSON ---------------------------------------------------------------------------------------------
def parse_json(text: str, origin: str, error: type[PflnasError] = PflnasError) -> Any:
    """Strict ``json.loads``: a key given twice in one object, ``NaN``/``Infinity`` (or a number that
    overflows to it), absurd nesting and numbers of thousands of digits each raise one ``error`` line."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise error(f"{origin}: key {key!r} is given twice in one object; keep one")
            out[key] = value
        return out

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise error(f"{origin}: the number {text[:40]} is out of range; write a finite number")
        return value

    def constant(name: str) -> Any:
        raise error(f"{origin}: {name} is not a number; write a finite number or null")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_float=finite, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise error(
            f"{origin}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise error(f"{origin}: JSON nested too deeply") from None
    except ValueError:  # Python's limit on the digits of an integer is the one other failure
        raise error(f"{origin}: holds a number with thousands of digits") from None


def load_json(path: str | Path, what: str, limit: int, error: type[PflnasError] = PflnasError) -> Any:
    """The strictly parsed JSON of the regular file at ``path`` (see :func:`parse_json`)."""
    return parse_json(read_capped_text(path, what, limit, error), str(path), error)


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """``"0-9"``, ``"0,3,7"`` or ``"0-2,5"`` as distinct seeds in the order given (ConfigError, one line,
    for anything else)."""
    seeds: list[int] = []
    example = f"e.g. {flag} 0-9 or {flag} 0,3,7"
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        if not low.strip().isdigit() or (dash and not high.strip().isdigit()):
            raise ConfigError(
                f"{flag} {text!r}: {part.strip()!r} is not a seed or a range of seeds; {example}"
            )
        first, last = int(low), int(high) if dash else int(low)
        if last < first or last - first >= 10_000:
            raise ConfigError(f"{flag} {text!r}: {part.strip()!r} is not an increasing range; {example}")
        seeds.extend(range(first, last + 1))
    if any(s >= 2**63 for s in seeds):
        raise ConfigError(f"{flag} {text!r}: seeds must be < 2**63")
    repeated = sorted(s for s, count in Counter(seeds).items() if count > 1)
    if repeated:
        raise ConfigError(f"{flag} {text!r} names seed {repeated[0]} twice; name each seed once")
    return seeds
