"""The layer-level study: homogeneous networks retrained and profiled, then reported."""

from __future__ import annotations

import json

import pytest
import yaml

from pflnas.analysis.report import write_report
from pflnas.errors import ConfigError
from pflnas.study.layer import layer_results, load_layer_study, run_layer_study

TINY = {
    "kind": "layer",
    "name": "tiny_layers",
    "retrain": {
        "recipe": "quick",
        "set": {
            "schedule.epochs": 1,
            "data.subset": 64,
            "data.batch_size": 32,
            "model.init_channels": 4,
            "model.layers": 3,
            "model.auxiliary": False,
        },
    },
    "profile": {"batch_size": 2, "warmup": 1, "repeats": 2, "threads": 1},
    "grid": {"spaces": ["cell_v1"], "ops": ["conv_3x3", "max_pool_3x3"], "seeds": [0]},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grid": {"spaces": ["cell_v1"], "ops": [], "seeds": [0]}}, "non-empty"),
        ({"grid": {"spaces": ["cell_v1"], "ops": ["sep_conv_5x5"], "seeds": [0]}}, "not a candidate"),
        ({"grid": {"spaces": ["resnet50_block"], "ops": ["identity"], "seeds": [0]}}, "--reduce-op"),
        ({"retrain": {"recipe": "nope"}}, "unknown recipe"),
        ({"profile": {"repeats": 0}}, "profile.repeats"),
        (
            {"grid": {"spaces": ["cell_v1"], "ops": ["conv_3x3"], "seeds": [0], "extra": 1}},
            "unknown config key",
        ),
    ],
)
def test_bad_layer_studies(change, message):
    with pytest.raises(ConfigError, match=message):
        load_layer_study({**TINY, **change}, "study.yaml")


@pytest.mark.slow
def test_layer_study_end_to_end(tmp_path, cifar_source, session_cache, monkeypatch, capsys):
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)
    study = load_layer_study(TINY, "tiny")
    out = tmp_path / "study"
    assert run_layer_study(study, out, data_dir=cifar_source) == 0
    rows = {r["op"]: r for r in layer_results(out)}
    assert set(rows) == {"conv_3x3", "max_pool_3x3"}
    assert rows["max_pool_3x3"]["params"] < rows["conv_3x3"]["params"]
    assert rows["max_pool_3x3"]["param_free_share"] == 1.0 and rows["conv_3x3"]["param_free_share"] == 0.0
    for r in rows.values():
        assert 0.0 <= r["top1"] <= 1.0 and r["latency_ms"] > 0 and r["epochs"] == 1
    profile = json.loads((out / "runs" / "cell_v1-conv_3x3-s0" / "profile.json").read_text())
    assert profile["network"]["init_channels"] == 4  # the retrained network, not the default one
    assert yaml.safe_load((out / "study.yaml").read_text())["kind"] == "layer"
    assert run_layer_study(study, out, data_dir=cifar_source) == 0  # complete runs are skipped
    assert capsys.readouterr().out.count("skip (complete)") == 2
    report = write_report([out], out / "report")
    text = report.markdown_path.read_text()
    assert "Accuracy against measured latency" in text and "max_pool_3x3" in text
    assert (out / "report" / "figures" / "accuracy_vs_latency.png").is_file()
