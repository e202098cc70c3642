from pathlib import Path

import pytest

from pflnas.config.loader import build_config, parse_override, read_yaml, to_dict
from pflnas.config.presets import preset_path
from pflnas.config.search import SearchConfig
from pflnas.config.validate import validate_search_config
from pflnas.errors import ConfigError

CONFIGS = sorted((Path(__file__).parent.parent / "experiments" / "configs").glob("*.yaml"))


def test_defaults_are_the_darts_protocol():
    cfg = SearchConfig()
    assert cfg.run.epochs == 50 and cfg.data.batch_size == 64 and cfg.data.train_portion == 0.5
    assert cfg.weights.lr == 0.025 and cfg.weights.lr_min == 0.001 and cfg.weights.grad_clip == 5.0
    assert cfg.arch.lr == 3e-4 and cfg.arch.betas == (0.5, 0.999) and cfg.arch.weight_decay == 1e-3


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    validate_search_config(build_config(SearchConfig, [read_yaml(path)]))


@pytest.mark.parametrize("name", ["quick", "darts"])
def test_presets_validate(name):
    validate_search_config(build_config(SearchConfig, [read_yaml(preset_path(name))]))


def test_precedence_and_round_trip():
    cfg = build_config(SearchConfig, [{"run": {"epochs": 3}}, {"run": {"epochs": 4}}], ["run.epochs=5"])
    assert cfg.run.epochs == 5
    assert build_config(SearchConfig, [to_dict(cfg)]) == cfg


def test_override_parsing():
    assert parse_override("a.b=3") == {"a": {"b": 3}}
    assert parse_override("a.b=[1, 2]") == {"a": {"b": [1, 2]}}
    assert parse_override("a.b=null") == {"a": {"b": None}}
    for bad in ("a.b", "=3", "a..b=1"):
        with pytest.raises(ConfigError, match="section.key=value"):
            parse_override(bad)


@pytest.mark.parametrize(
    "layer, message",
    [
        ({"run": {"epochs": 0}}, "run.epochs must be >= 1"),
        ({"run": {"epochs": True}}, "must be an integer"),
        ({"data": {"train_portion": 1.5}}, "train_portion"),
        ({"arch": {"betas": [0.5]}}, "must have 2 items"),
        ({"space": {"ops": "conv_3x3"}}, "must be a list"),
        ({"bogus": {}}, "unknown config key"),
        ({"run": 3}, "must be a mapping"),
    ],
)
def test_rejections(layer, message):
    with pytest.raises(ConfigError, match=message):
        validate_search_config(build_config(SearchConfig, [layer]))


def test_read_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(bad)
    top = tmp_path / "top.yaml"
    top.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        read_yaml(top)
