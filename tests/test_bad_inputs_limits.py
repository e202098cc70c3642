"""Inputs that ask for too much: grids of a million runs, huge seed lists, ranges of 10**30, 100000 threads.

Each is refused with one line naming the limit before any per-run work is done (the tests replace the
per-run work with a function that fails, so a refusal that comes too late fails them).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pflnas.cli.main import main
from pflnas.configs import MAX_RUNS, MAX_THREADS, check_list
from pflnas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DARTS_V2 = str(ROOT / "experiments/archs/darts_v2.json")


def _one_line(capsys, argv: list[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


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
        (f"range(0, {10**30})", "DARTS cells have nodes 2..5"),
        (f"range(-{10**30}, {10**30}, {10**29})", "DARTS cells have nodes 2..5"),
        (f"range({10**30})", "DARTS cells have nodes 2..5"),
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


def test_bench_sample_size_above_population(capsys):
    argv = ["bench", "nb201", "--strategy", "evolution", "--sample-size", "20", "--population", "5"]
    assert "--sample-size 20 is larger than --population 5" in _one_line(capsys, argv)
    assert "over the cap" in _one_line(
        capsys, ["bench", "nb201", "--strategy", "evolution", "--seeds", "100000"]
    )
