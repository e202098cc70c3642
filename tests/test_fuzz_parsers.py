"""Property-based fuzzing of the two parsers users feed by hand: found.json and the YAML/``--set`` config.

The contract: whatever the input, the parser either returns a valid object (which then round-trips through
its own file format) or raises :class:`~pflnas.errors.PflnasError`; never any other exception.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import string
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from _runs import make_probs
from _spaces import tiny
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pflnas.arch import save_architecture
from pflnas.arch.derive import derive_architecture
from pflnas.arch.record import Architecture, load_architecture
from pflnas.config.loader import build_config, parse_override, read_yaml, to_dict
from pflnas.config.search import SearchConfig
from pflnas.config.validate import validate_search_config
from pflnas.errors import ConfigError, PflnasError
from pflnas.ops import list_ops
from pflnas.parsing import MAX_YAML_VALUES, parse_yaml
from pflnas.train.recipe import RetrainConfig, validate_retrain_config

FUZZ = settings(  # no example database: nothing is written into the checkout
    max_examples=int(os.environ.get("PFLNAS_FUZZ_EXAMPLES", "150")),  # raise it for a longer local hunt
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --- found.json --------------------------------------------------------------------------------------
def _record(space_name: str, seed: int = 0) -> dict[str, Any]:
    space = tiny(space_name)
    probs = make_probs(space, np.random.default_rng(seed))
    arch = derive_architecture(space, probs, {"seed": seed, "strategy": "darts", "wall_time_s": 1.5})
    return arch.to_dict()


VALID = {name: _record(name) for name in ("cell_v1", "nb201", "resnet50_block")}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 40)  # around real node ids, cell counts and layers
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(list_ops())
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every location in a JSON tree: the root, each key of an object, each item of a list."""
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _mutate(doc: Any, data: st.DataObject) -> Any:
    """One random structural edit of ``doc``: drop, replace or insert at a random location."""
    path = data.draw(st.sampled_from(_paths(doc)), label="path")
    action = data.draw(st.sampled_from(["replace", "drop", "insert", "op", "index"]), label="action")
    if not path:  # the root itself
        return data.draw(json_values) if action == "replace" else doc
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "drop":
        del parent[last]
    elif action == "insert" and isinstance(parent, dict):
        parent[data.draw(st.text(max_size=10) | st.sampled_from(sorted(VALID["cell_v1"])))] = data.draw(
            json_values
        )
    elif action == "insert":
        parent.insert(last, data.draw(json_values))
    elif action == "op":
        parent[last] = data.draw(st.sampled_from(list_ops()) | st.text(max_size=15))
    elif action == "index":
        parent[last] = data.draw(st.integers(-2, 12) | st.integers(min_value=10**6))
    else:
        parent[last] = data.draw(json_values)
    return doc


def _load_text(folder: Path, raw: bytes) -> Architecture:
    path = folder / "found.json"
    path.write_bytes(raw)
    return load_architecture(path)


def _check_round_trip(arch: Architecture, folder: Path) -> None:
    again = load_architecture(save_architecture(arch, folder / "again.json"))
    assert (again.space, again.cells, again.blocks) == (arch.space, arch.cells, arch.blocks)
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(arch.to_dict(), sort_keys=True)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _parse_or_user_error(scratch: Path, raw: bytes) -> None:
    try:
        arch = _load_text(scratch, raw)
    except PflnasError as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
        return
    _check_round_trip(arch, scratch)


@pytest.mark.parametrize("space", sorted(VALID))
def test_valid_records_round_trip(space, scratch):
    arch = Architecture.from_dict(copy.deepcopy(VALID[space]))
    _check_round_trip(arch, scratch)


@FUZZ
@given(space=st.sampled_from(sorted(VALID)), data=st.data(), edits=st.integers(1, 3))
def test_found_json_mutations(scratch, space, data, edits):
    doc = copy.deepcopy(VALID[space])
    for _ in range(edits):
        doc = _mutate(doc, data)
    try:
        text = json.dumps(doc)
    except ValueError:  # e.g. a float the encoder refuses; nothing to load
        assume(False)
    _parse_or_user_error(scratch, text.encode())


def _space_fields(record: dict[str, Any]) -> list[tuple[str, ...]]:
    space = record["space"]
    return [("space", k) for k in space] + [("space", "skeleton", k) for k in space.get("skeleton", {})]


SPACE_FIELDS = sorted({(name, path) for name, record in VALID.items() for path in _space_fields(record)})
edge_numbers = st.sampled_from([0, -1, 1, 2, 10**9, 10**30, 1e308, -1e308, 0.5, 1e-300]) | st.floats()
space_values = edge_numbers | st.lists(edge_numbers | st.integers(-2, 10**6), max_size=4) | json_values


@FUZZ
@given(field=st.sampled_from(SPACE_FIELDS), value=space_values)
def test_found_json_space_fields(scratch, field, value):
    """Every field of the recorded space (and of a block space's skeleton), set to edge-case values."""
    name, path = field
    doc = copy.deepcopy(VALID[name])
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    _parse_or_user_error(scratch, json.dumps(doc).encode())


@FUZZ
@given(space=st.sampled_from(sorted(VALID)), cut=st.floats(0, 1))
def test_found_json_truncated(scratch, space, cut):
    text = json.dumps(VALID[space], indent=2).encode()
    _parse_or_user_error(scratch, text[: int(cut * len(text))])


@FUZZ
@given(space=st.sampled_from(sorted(VALID)), at=st.floats(0, 1), junk=st.binary(min_size=1, max_size=16))
def test_found_json_random_bytes(scratch, space, at, junk):
    text = json.dumps(VALID[space]).encode()
    i = int(at * len(text))
    _parse_or_user_error(scratch, text[:i] + junk + text[i + len(junk) :])


pathological_json = st.one_of(
    st.integers(1, 5_000).map(lambda n: "[" * n + "]" * n),  # nesting deeper than the recursion limit
    st.integers(1, 5_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(1, 10_000).map(lambda n: "9" * n),  # integers beyond Python's 4300-digit parse limit
    st.integers(1, 10_000).map(lambda n: '{"schema_version": 1, "space": ' + "9" * n + "}"),
)


@FUZZ
@given(raw=st.binary(max_size=64) | st.text(max_size=64).map(str.encode) | pathological_json.map(str.encode))
def test_found_json_arbitrary_content(scratch, raw):
    _parse_or_user_error(scratch, raw)


# --- configs -----------------------------------------------------------------------------------------
def _field_names(cls: type) -> dict[str, Any]:
    """``{section: {field: type}}`` of a composed config class."""
    return {
        f.name: {g.name: g.type for g in dataclasses.fields(f.default_factory)}  # type: ignore[arg-type]
        for f in dataclasses.fields(cls)
        if f.default_factory is not dataclasses.MISSING
    }


SEARCH_KEYS = _field_names(SearchConfig)
RETRAIN_KEYS = _field_names(RetrainConfig)

yaml_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 50)
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10)
    | st.sampled_from(["cpu", "cuda", "auto", "darts", "gdas", "nb201", "cifar10", "cosine", "bf16", "none"])
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _sections(keys: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Nested dicts whose keys are mostly real section/field names, with random values."""
    field = st.sampled_from([f for fields in keys.values() for f in fields]) | st.text(max_size=6)
    section = st.dictionaries(field, yaml_values, max_size=4) | yaml_values
    return st.dictionaries(st.sampled_from(sorted(keys)) | st.text(max_size=6), section, max_size=4)


def _build_or_user_error(cls: type, layers: list[Any], overrides: list[str] = ()) -> Any:
    try:
        cfg = build_config(cls, layers, overrides)
        if cls is SearchConfig:
            validate_search_config(cfg)
            from pflnas.spaces import resolve_space

            resolve_space(cfg.space)
        else:
            validate_retrain_config(cfg)
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message
        return None
    assert build_config(cls, [to_dict(cfg)]) == cfg  # what the run directory's config.yaml rebuilds
    return cfg


@FUZZ
@given(layer=_sections(SEARCH_KEYS))
def test_search_config_random_dicts(layer):
    _build_or_user_error(SearchConfig, [layer])


@FUZZ
@given(layer=_sections(RETRAIN_KEYS))
def test_retrain_config_random_dicts(layer):
    _build_or_user_error(RetrainConfig, [layer])


dotted_keys = st.sampled_from([f"{s}.{f}" for s, fields in SEARCH_KEYS.items() for f in fields])
override_text = st.text(alphabet=string.printable, max_size=20)


@FUZZ
@given(
    items=st.lists(
        st.tuples(dotted_keys | override_text, st.sampled_from(["=", "", "==", "=."]), override_text),
        max_size=4,
    )
)
def test_set_overrides(items):
    overrides = [f"{key}{sep}{value}" for key, sep, value in items]
    try:
        for item in overrides:
            parse_override(item)
    except ConfigError:
        return
    _build_or_user_error(SearchConfig, [], overrides)


@FUZZ
@given(
    text=st.text(alphabet=string.printable, max_size=80)
    | yaml_values.map(yaml.safe_dump)
    | st.integers(1, 1_200).map(lambda n: "[" * n + "]" * n)
)
def test_yaml_text(scratch, text):
    try:
        data = parse_yaml(text, "fuzz.yaml")
    except ConfigError:
        return
    _build_or_user_error(SearchConfig, [data])


@st.composite
def alias_documents(draw: st.DrawFn) -> str:
    """YAML whose anchors hold aliases of earlier anchors (and now and then of themselves): the shapes of
    alias bombs and recursive aliases, at sizes on both sides of the expansion cap."""
    lines = []
    for i in range(draw(st.integers(1, 7))):
        earlier = [f"*a{j}" for j in range(i)] + draw(st.sampled_from([[], [f"*a{i}"]]))
        items = draw(st.lists(st.sampled_from(["1", "x", "null", *earlier]), min_size=1, max_size=12))
        if draw(st.booleans()):
            body = "[" + ", ".join(items) + "]"
        else:
            body = "{" + ", ".join(f"k{n}: {item}" for n, item in enumerate(items)) + "}"
        lines.append(f"    a{i}: &a{i} {body}")
    return "space:\n  name: resnet50_block\n  skeleton:\n" + "\n".join(lines) + "\n"


def _values(node: Any, budget: int) -> int:
    """How many values ``node`` expands to, counting at most ``budget`` (then it returns budget + 1)."""
    count, stack = 0, [node]
    while stack and count <= budget:
        item = stack.pop()
        count += 1
        stack.extend(item.values() if isinstance(item, dict) else item if isinstance(item, list) else ())
    return count


@FUZZ
@given(text=alias_documents())
def test_yaml_aliases_expand_within_the_cap_or_are_refused(text):
    """Whatever the aliases, parsing answers at once: a ConfigError line, or data whose full expansion is
    within the cap (so dataclasses.asdict, deep_merge and the dump walk a bounded structure)."""
    try:
        data = parse_yaml(text, "fuzz.yaml")
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert _values(data, MAX_YAML_VALUES) <= MAX_YAML_VALUES
    _build_or_user_error(SearchConfig, [data])


@FUZZ
@given(raw=st.binary(max_size=48))
def test_yaml_file_bytes(scratch, raw):
    path = scratch / "config.yaml"
    path.write_bytes(raw)
    try:
        data = read_yaml(path)
    except ConfigError:
        return
    _build_or_user_error(SearchConfig, [data])


# Valid values drawn from each key's documented range: they must survive the resolved-config dump.
IN_RANGE = {
    "run.epochs": st.integers(1, 10**6),
    "run.seed": st.integers(0, 2**63 - 1),
    "run.threads": st.none() | st.integers(1, 256),
    "run.amp": st.booleans(),
    "run.device": st.sampled_from(["cpu", "auto"]),
    "data.batch_size": st.integers(1, 4096),
    "data.eval_batch_size": st.integers(1, 4096),
    "data.train_portion": st.floats(0.3, 0.7),
    "data.subset": st.none() | st.integers(14_000, 10**6),  # both halves hold the largest batch
    "data.eval_limit": st.none() | st.integers(1, 10**6),
    "weights.lr": st.floats(1e-6, 10.0),
    "weights.momentum": st.floats(0.0, 0.999),
    "weights.weight_decay": st.floats(0.0, 1.0),
    "arch.lr": st.floats(1e-6, 1.0),
    "arch.betas": st.tuples(st.floats(0.0, 0.999), st.floats(0.0, 0.999)).map(list),
    "collapse.max_skip_mass": st.floats(0.0, 1.0),
    "collapse.min_entropy": st.floats(0.0, 1.0),
    "space.name": st.sampled_from(["cell_v1", "darts", "nb201"]),
    "space.nodes": st.none() | st.integers(1, 6),
    "space.init_channels": st.none() | st.integers(1, 64),
    "strategy.name": st.sampled_from(["darts", "darts2", "gdas", "pcdarts"]),
}


@FUZZ
@given(values=st.fixed_dictionaries({}, optional=IN_RANGE))
def test_in_range_values_round_trip_through_the_dump(scratch, values):
    overrides = [f"{key}={json.dumps(value)}" for key, value in values.items()]
    cfg = build_config(SearchConfig, [], overrides)
    validate_search_config(cfg)
    path = scratch / "resolved.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))  # as the run directory stores it
    assert build_config(SearchConfig, [read_yaml(path)]) == cfg
    for key, value in values.items():
        section, name = key.split(".")
        got = getattr(getattr(cfg, section), name)
        assert (list(got) if isinstance(got, tuple) else got) == value
