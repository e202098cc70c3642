"""Inputs that ask for too much: grids of a million runs, huge seed lists, ranges of 10**30, 100000 threads.

Each is refused with one line naming the limit before any per-run work is done (the tests replace the
per-run work with a function that fails, so a refusal that comes too late fails them).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pflnas.cli.main import main
from pflnas.config.limits import MAX_RUNS, MAX_THREADS, check_list
from pflnas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DARTS_V2 = str(ROOT / "experiments/archs/darts_v2.json")


def _one_line(capsys, argv: list[str]) -> str:
    """The one error line of a refused command (progress lines before it are fine; a traceback is not)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def _never(*args, **kwargs):
    raise AssertionError("per-run work started before the grid was checked")


def _study_file(tmp_path: Path, grid: dict, kind: str = "search") -> str:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"kind": kind, "name": "big", "grid": grid}, default_flow_style=True))
    return str(path)


def test_a_million_run_study_is_refused_before_any_run_is_built(tmp_path, capsys, monkeypatch):
    import pflnas.study.config as study_config

    monkeypatch.setattr(study_config, "search_config", _never)
    grid = {
        "spaces": [f"s{i}" for i in range(10)],
        "strategies": [f"t{i}" for i in range(10)],
        "settings": {f"x{i}": {} for i in range(100)},
        "seeds": list(range(100)),
    }
    line = _one_line(capsys, ["study", _study_file(tmp_path, grid), "--dry-run"])
    assert "1,000,000 runs" in line and f"cap of {MAX_RUNS:,}" in line, line


def test_many_seeds_meet_the_grid_cap(tmp_path, capsys, monkeypatch):
    import pflnas.study.config as study_config

    monkeypatch.setattr(study_config, "search_config", _never)
    grid = {"spaces": ["cell_v1"], "strategies": ["darts"], "seeds": list(range(MAX_RUNS + 1))}
    line = _one_line(capsys, ["study", _study_file(tmp_path, grid), "--dry-run"])
    assert f"{MAX_RUNS + 1:,} runs" in line


def test_repeat_check_is_linear_and_names_the_repeats():
    seeds = list(range(10**5)) + [7, 99_999]
    with pytest.raises(ConfigError, match="grid.seeds repeats 7, 99999; list each once"):
        check_list("grid.seeds", seeds)
    check_list("grid.seeds", list(range(10**5)))


def test_seeds_share_one_config_check(tmp_path, monkeypatch):
    """A run's config differs from its neighbours' only by run.seed, so 50 seeds cost one check per
    space x strategy x setting, not 50 full configs."""
    import pflnas.study.config as study_config
    from pflnas.study.runner import expand_grid

    calls = []
    monkeypatch.setattr(study_config, "search_config", lambda args: calls.append(args))
    study = study_config.load_study(
        _study_file(tmp_path, {"spaces": ["cell_v1"], "strategies": ["darts"], "seeds": list(range(50))})
    )
    study_config.check_runs(study, expand_grid(study), threads=1)
    assert len(calls) == 4  # the space, search.set, the one setting, and the one space x strategy x setting


def test_layer_and_swap_grids_are_capped(tmp_path, monkeypatch):
    import pflnas.study.layer as layer
    import pflnas.study.swap as swap

    monkeypatch.setattr(layer, "check_settings", _never)
    grid = {"spaces": ["cell_v1"], "ops": ["conv_3x3"], "seeds": list(range(MAX_RUNS + 1))}
    with pytest.raises(ConfigError, match="over the cap"):
        layer.load_layer_study({"kind": "layer", "name": "x", "grid": grid}, "study.yaml")
    monkeypatch.setattr(swap, "_load_arch", _never)
    data = {"kind": "swap", "name": "x", "archs": [DARTS_V2], "seeds": list(range(MAX_RUNS + 1))}
    with pytest.raises(ConfigError, match="over the cap"):
        swap.load_swap_study(data, str(tmp_path / "study.yaml"))


@pytest.mark.parametrize(
    "concat, words",
    [
        ("range(0, 10**30)", "must be an integer literal"),
        (f"range(0, {10**30})", "far more nodes than a DARTS cell has"),
        (f"range(-{10**30}, {10**30}, {10**29})", "far more nodes than a DARTS cell has"),
        (f"range({10**30})", "far more nodes than a DARTS cell has"),
        ("[" + "-" * 3000 + "2]", "not a valid expression"),
    ],
)
def test_from_darts_huge_ranges(capsys, concat, words):
    pairs = ", ".join(["('sep_conv_3x3', 0)"] * 8)
    genotype = (
        f"Genotype(normal=[{pairs}], normal_concat={concat}, reduce=[{pairs}], reduce_concat=[2, 3, 4, 5])"
    )
    assert words in _one_line(capsys, ["arch", "from-darts", genotype])


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "--space", "cell_v1", "--set", "run.threads=100000", "--out", "{out}"],
        ["retrain", "--arch", DARTS_V2, "--recipe", "quick", "--set", "run.threads=100000", "--out", "{out}"],
        ["profile", "--arch", DARTS_V2, "--threads", "100000"],
    ],
    ids=["search", "retrain", "profile"],
)
def test_absurd_thread_counts_are_refused(tmp_path, capsys, argv):
    argv = [a.replace("{out}", str(tmp_path / "out")) for a in argv]
    line = _one_line(capsys, argv)
    assert f"at most {MAX_THREADS}" in line and "100000" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--layers", "1000000"], "layers 1000000 is far too large"),
        (["--init-channels", "10000000"], "init_channels 10000000 is far too large"),
        (["--image-size", "10000000"], "image_size 10000000 is far too large"),
        (["--num-classes", "10000000000"], "num_classes 10000000000 is far too large"),
    ],
)
def test_network_shapes_are_capped_before_building(capsys, flags, words):
    """A million cells would take minutes to build even on the meta device: refused from the number."""
    assert words in _one_line(capsys, ["profile", "--arch", DARTS_V2, "--no-speed", *flags])


def test_bench_sample_size_above_population(capsys):
    argv = ["bench", "nb201", "--strategy", "evolution", "--sample-size", "20", "--population", "5"]
    assert "--sample-size 20 is larger than --population 5" in _one_line(capsys, argv)
    assert "over the cap" in _one_line(
        capsys, ["bench", "nb201", "--strategy", "evolution", "--seeds", "100000"]
    )


# --- the memory guard shared by search, retrain and profile -------------------------------------------------
def test_model_bytes_counts_without_allocating():
    import torch

    from pflnas.device import model_bytes

    small = model_bytes(lambda: torch.nn.Linear(10, 5))
    assert small == (10 * 5 + 5) * 4
    assert model_bytes(lambda: torch.nn.Linear(10**6, 10**6)) == (10**12 + 10**6) * 4  # 4 TB, instantly


def test_build_within_memory_refuses_from_the_estimate(monkeypatch):
    import torch

    import pflnas.device as device

    monkeypatch.setattr(device, "free_memory", lambda place: 1000)
    built = []

    def build():
        built.append(torch.get_default_device().type)
        return torch.nn.Linear(100, 100)

    with pytest.raises(ConfigError, match=r"the net does not fit in memory.*lower it"):
        device.build_within_memory(build, torch.device("cpu"), "the net", "lower it", copies=3)
    assert built == ["meta"]  # refused before a real build
    monkeypatch.setattr(device, "free_memory", lambda place: 10**9)
    assert isinstance(device.build_within_memory(build, torch.device("cpu"), "the net", "x"), torch.nn.Linear)
    assert built[-1] == "cpu"


@pytest.mark.parametrize(
    "argv",
    [
        ["profile", "--arch", DARTS_V2, "--init-channels", "60000", "--no-speed"],
        ["profile", "--ops", "--space", "resnet50_block", "--set", "space.skeleton.width_mult=1000"],
        ["profile", "--ops", "--space", "cell_v1", "--set", "space.init_channels=100000"],
    ],
    ids=["arch", "ops-block", "ops-cell"],
)
def test_profile_refuses_a_network_too_wide_for_memory(capsys, argv):
    line = _one_line(capsys, argv)
    assert "does not fit in memory" in line and "GiB" in line and "lower" in line


@pytest.mark.parametrize("command", ["search", "retrain"])
def test_search_and_retrain_refuse_a_network_too_wide_for_memory(tmp_path, capsys, monkeypatch, command):
    from _data_fixtures import make_tree

    import pflnas.device as device

    monkeypatch.setattr(device, "free_memory", lambda place: 1000)  # 1000 bytes free: any network is too big
    monkeypatch.setenv("PFLNAS_CACHE", str(tmp_path / "cache"))
    make_tree(tmp_path / "data", n_train=4, n_test=1)
    common = ["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--device", "cpu"]
    if command == "search":
        sets = ["space.init_channels=4", "space.layers=3", "data.subset=20", "data.batch_size=4"]
        argv = ["search", "--space", "cell_v1", "--preset", "quick", *common]
    else:
        sets = ["data.subset=20", "data.batch_size=4", "model.init_channels=4", "model.layers=3"]
        argv = ["retrain", "--arch", DARTS_V2, "--recipe", "quick", *common]
    for item in sets:
        argv += ["--set", item]
    line = _one_line(capsys, argv)
    assert "does not fit in memory" in line and "training state need" in line, line
