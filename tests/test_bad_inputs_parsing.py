"""Bad text a user can hand pflnas: YAML alias bombs and cycles, strict JSON records, look-alike names.

Each case must end in one ``PflnasError`` line (the CLI prints it, exit 2) and do so at once: an alias bomb
is refused from its node graph, before anything walks the expansion.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from _runs import make_probs
from _spaces import tiny

from pflnas.arch.derive import derive_architecture
from pflnas.arch.record import load_architecture
from pflnas.cli.main import main
from pflnas.config.loader import build_config, parse_override, read_yaml
from pflnas.config.search import SearchConfig
from pflnas.errors import ArchitectureError, ConfigError, DataError
from pflnas.parsing import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_VALUES, parse_json, parse_yaml


def _bomb(levels: int = 9, width: int = 9, indent: str = "") -> str:
    """``levels`` anchors, each a list of ``width`` aliases of the one before: ``width**levels`` values."""
    lines = [f"{indent}l0: &l0 [{', '.join(['x'] * width)}]"]
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _one_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# --- YAML -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, words",
    [
        (_bomb(), f"more than {MAX_YAML_VALUES:,} values"),
        ("a: &a [*a]\n", "contains it"),
        ("a: &a {b: *a}\n", "contains it"),
        ("a: &a [1, {b: [*a]}]\n", "contains it"),
        ("a: " + "[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1) + "\n", "levels deep"),
        ("a: " + "{b: " * (MAX_YAML_DEPTH + 1) + "1" + "}" * (MAX_YAML_DEPTH + 1) + "\n", "levels deep"),
        ("a: [" + ", ".join(["1"] * MAX_YAML_VALUES) + "]\n", f"more than {MAX_YAML_VALUES:,} values"),
        ("a: [" + ", ".join(["1"] * (MAX_YAML_BYTES // 3 + 1)) + "]\n", "far too large"),
    ],
    ids=["bomb", "self-list", "self-map", "indirect", "deep-list", "deep-map", "many-values", "many-bytes"],
)
def test_yaml_caps_refuse(text, words):
    with pytest.raises(ConfigError, match=words) as info:
        parse_yaml(text, "x.yaml")
    assert "\n" not in str(info.value)


def test_yaml_below_the_caps_loads_with_its_aliases():
    data = parse_yaml(_bomb(levels=3, width=9), "x.yaml")  # 729 values: a shared anchor is fine
    assert len(data["l2"]) == 9 and data["l2"][0] == data["l1"]
    assert parse_yaml("base: &b {lr: 0.1}\nrun: {<<: *b, epochs: 2}\n", "x.yaml")["run"] == {
        "lr": 0.1,
        "epochs": 2,
    }


def test_alias_bomb_under_the_skeleton_is_refused_at_once(tmp_path, capsys):
    """The case that hung: ``dataclasses.asdict`` of the space walked a billion-value skeleton."""
    config = tmp_path / "bomb.yaml"
    config.write_text("space:\n  name: resnet50_block\n  skeleton:\n" + _bomb(indent="    "))
    argv = ["search", "--space", "resnet50_block", "--config", str(config), "--out", str(tmp_path / "o")]
    assert f"more than {MAX_YAML_VALUES:,} values" in _one_line(capsys, argv)
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("space:\n  name: resnet50_block\n  skeleton:\n    depths: &d [*d]\n")
    argv[4] = str(recursive)
    assert "contains it" in _one_line(capsys, argv)


def test_override_values_have_the_same_caps():
    with pytest.raises(ConfigError, match="override space.skeleton: refused"):
        parse_override("space.skeleton={" + _bomb(levels=8, width=9).replace("\n", ", ") + "}")
    with pytest.raises(ConfigError, match="contains it"):
        parse_override("space.skeleton=&a [*a]")
    assert parse_override("run.device=[cpu")["run"]["device"] == "[cpu"  # not YAML: stays text


def test_huge_recipe_is_refused_by_its_size(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("source: x\n" + "#" * MAX_YAML_BYTES + "\n")
    found = tmp_path / "found.json"
    found.write_text(json.dumps(_record()))
    argv = ["retrain", "--arch", str(found), "--recipe", str(recipe), "--out", str(tmp_path / "o")]
    assert "far too large" in _one_line(capsys, argv)


def test_yaml_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  epochs: 1\n  epochs: 2\n")
    with pytest.raises(ConfigError, match="'epochs' is given twice"):
        build_config(SearchConfig, [read_yaml(path)])


# --- strict JSON records --------------------------------------------------------------------------------
def _record(space: str = "cell_v1") -> dict:
    s = tiny(space)
    return derive_architecture(s, make_probs(s, np.random.default_rng(0)), {"seed": 0}).to_dict()


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"a": 1, "a": 2}', "'a' is given twice"),
        ('{"a": {"b": 1, "b": 1}}', "'b' is given twice"),
        ('{"a": NaN}', "NaN is not a number"),
        ('{"a": -Infinity}', "-Infinity is not a number"),
        ('{"a": 1e400}', "out of range"),
        ('{"a": [1, 2', "not valid JSON"),
    ],
)
def test_strict_json(text, words):
    with pytest.raises(ArchitectureError, match=words):
        parse_json(text, "x.json", ArchitectureError)


def _edited(tmp_path: Path, edit, space: str = "cell_v1") -> Path:
    doc = copy.deepcopy(_record(space))
    edit(doc)
    path = tmp_path / "found.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    return path


def _first_dist(doc: dict) -> dict:
    return next(iter(doc["probabilities"].values()))


def _renormalised_without_op(doc: dict) -> None:
    dist = _first_dist(doc)
    dist.pop(next(iter(dist)))
    total = sum(dist.values())
    for op in dist:
        dist[op] /= total


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d.update(param_free_share=7), "must be in [0, 1]"),
        (lambda d: d.update(param_free_share=-1), "must be in [0, 1]"),
        (lambda d: d.update(param_free_share=math.nan), "NaN is not a number"),
        (lambda d: d.update(param_free_share="0.5"), "must be a number"),
        (lambda d: d.update(param_free_share=1.0 - d["param_free_share"] or 1.0), "the choices give"),
        (lambda d: _first_dist(d).update({k: v / 2 for k, v in _first_dist(d).items()}), "sums to"),
        (_renormalised_without_op, "lacks op(s)"),
        (lambda d: _first_dist(d).update({next(iter(_first_dist(d))): 1.5}), "number in [0, 1]"),
        (lambda d: _first_dist(d).update({next(iter(_first_dist(d))): math.inf}), "Infinity is not"),
    ],
    ids=[
        "share-7",
        "share-neg",
        "share-nan",
        "share-str",
        "share-mismatch",
        "dist-sum",
        "dist-incomplete",
        "prob-above-1",
        "prob-inf",
    ],
)
def test_found_json_fields_are_range_checked(tmp_path, edit, words):
    with pytest.raises(ArchitectureError, match=re.escape(words)) as info:
        load_architecture(_edited(tmp_path, edit))
    assert "\n" not in str(info.value)


def test_found_json_duplicate_key_through_the_cli(tmp_path, capsys):
    text = json.dumps(_record())
    path = tmp_path / "found.json"
    path.write_text(text.replace('"schema_version": 1', '"schema_version": 1, "schema_version": 1', 1))
    assert "'schema_version' is given twice" in _one_line(capsys, ["arch", "validate", str(path)])


@pytest.mark.parametrize("space", ["cell_v1", "nb201", "resnet50_block"])
def test_complete_records_and_records_without_probabilities_load(tmp_path, space):
    load_architecture(_edited(tmp_path, lambda d: None, space))
    load_architecture(_edited(tmp_path, lambda d: d.update(probabilities={}, param_free_share=None), space))


# --- look-alike names -------------------------------------------------------------------------------------
CYRILLIC = {"o": "\u043e", "a": "\u0430", "e": "\u0435", "c": "\u0441", "i": "\u0456"}  # print as Latin


def _look_alike(name: str) -> str:
    """``name`` with its first letter that has a Cyrillic twin swapped for the twin."""
    i = next(i for i, ch in enumerate(name) if ch in CYRILLIC)
    return name[:i] + CYRILLIC[name[i]] + name[i + 1 :]


def _lookups() -> dict[str, tuple]:
    from pflnas.arch.darts_genotype import architecture_from_genotype
    from pflnas.config.presets import preset_path
    from pflnas.data.specs import get_dataset_spec
    from pflnas.ops import get_op
    from pflnas.spaces import load_space
    from pflnas.strategies.registry import check_strategy
    from pflnas.train.recipe import recipe_layer

    pairs = ", ".join(["('sep_conv_3x3', 0)"] * 8)
    genotype = (
        f"Genotype(normal=[{pairs}], normal_concat=range(2, 6), reduce=[{pairs}], reduce_concat=[2, 3, 4, 5])"
    )
    return {
        "op": (get_op, "conv_3x3"),
        "space": (load_space, "cell_v1"),
        "space-op": (lambda n: tiny("cell_v1").replace(ops=(n,)), "conv_3x3"),
        "recipe": (recipe_layer, "quick"),
        "preset": (preset_path, "quick"),
        "strategy": (check_strategy, "darts"),
        "dataset": (get_dataset_spec, "cifar10"),
        "genotype-op": (
            lambda n: architecture_from_genotype(genotype.replace("sep_conv_3x3", n)),
            "sep_conv_3x3",
        ),
    }


@pytest.mark.parametrize("registry", sorted(_lookups()))
def test_look_alike_names_are_pointed_out(registry):
    lookup, valid = _lookups()[registry]
    fake = _look_alike(valid)
    with pytest.raises((KeyError, ConfigError, ArchitectureError, DataError)) as info:
        lookup(fake)
    message = str(info.value)
    assert "non-ASCII character" in message and "U+04" in message, message
    assert f"did you mean {valid!r}" in message, message


def test_look_alike_op_in_a_found_json(tmp_path, capsys):
    doc = _record()
    op = doc["cells"][0]["edges"][0]["op"]
    doc["cells"][0]["edges"][0]["op"] = _look_alike(op)
    path = tmp_path / "found.json"
    path.write_text(json.dumps(doc))
    line = _one_line(capsys, ["arch", "validate", str(path)])
    assert "non-ASCII character" in line and f"did you mean {op!r}" in line


def test_look_alike_strategy_through_search(tmp_path, capsys):
    argv = ["search", "--space", "cell_v1", "--strategy", _look_alike("darts"), "--out", str(tmp_path / "o")]
    line = _one_line(capsys, argv)
    assert "non-ASCII character" in line and "did you mean 'darts'" in line, line


def test_name_hint_only_when_it_helps():
    from pflnas.names import name_hint

    assert name_hint("conv3x3", ["conv_3x3", "skip_connect"]) == " (did you mean 'conv_3x3'?)"
    assert name_hint("zzzzzz", ["conv_3x3"]) == ""
    assert "position 1 and 1 more" in name_hint("\u00e9\u00e9", ["conv_3x3"])
    assert name_hint(3, ["conv_3x3"]) == ""
