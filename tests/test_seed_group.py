"""``pflnas search --seeds``: N seeds' searches as one grouped network give, in float64, what N separate
``--seed`` searches give (found.json, metrics apart from timing, config, and the checkpoints' weights, alphas,
BatchNorm statistics and optimizer states to 1e-10), for every strategy that groups; an interrupted group
resumes exactly; what it refuses says so in one line."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from _batched import TOL, float64
from _recorded import cli
from _tiny_runs import search_argv, tiny_archive

from pflnas.cli.main import main
from pflnas.config.search import ArchOptimConfig
from pflnas.errors import ConfigError
from pflnas.parsing import parse_seeds
from pflnas.strategies import MULTI_TRIAL_STRATEGIES, create_strategy, list_strategies

GROUPED = [
    s
    for s in list_strategies()
    if s not in MULTI_TRIAL_STRATEGIES and create_strategy(s, ArchOptimConfig()).seed_groups
]
# every strategy that groups on cell_v1; NAS-Bench-201's skeleton (reduction blocks, BN-ReLU head) with darts
CASES = [("cell_v1", s) for s in GROUPED] + [("nb201", "darts")]
SPACE_SETS = {"nb201": ("space.layers=1",)}  # one search cell per stage (SEARCH_SETS' 3 are for DARTS cells)
SEEDS = (0, 1, 2)
EPOCHS = 2  # the second epoch steps with the first one's momentum and Adam statistics


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_archive(tmp_path_factory.mktemp("data"))


def _rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _close(a: Any, b: Any, where: str) -> None:
    """Equal structures; floats within 1e-10 (relative to their size)."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= TOL * max(1.0, abs(a)), (where, a, b)
    else:
        assert a == b, (where, a, b)


def _tensors_close(a: dict[str, Any], b: dict[str, Any], where: str) -> None:
    assert set(a) == set(b), where
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert (a[k].double() - b[k].double()).abs().max().item() <= TOL, f"{where}.{k}"
        elif isinstance(a[k], dict):
            _tensors_close(a[k], b[k], f"{where}.{k}")
        else:
            assert a[k] == b[k], f"{where}.{k}"


def _same_run(grouped: Path, single: Path) -> None:
    """A group member's run directory holds what the single-seed run's (or another group's member's) holds,
    timing and the members' own directories aside."""
    drop_timing = lambda rows: [{k: v for k, v in r.items() if k != "epoch_time"} for r in rows]  # noqa: E731
    _close(drop_timing(_rows(grouped)), drop_timing(_rows(single)), "metrics")
    found = [json.loads((d / "found.json").read_text()) for d in (grouped, single)]
    for record in found:
        record["provenance"].pop("wall_time_s")
    _close(found[0], found[1], "found.json")
    configs = [yaml.safe_load((d / "config.yaml").read_text()) for d in (grouped, single)]
    group = configs[0].pop("resolved_group")
    assert configs[1].pop("resolved_group", group)["seeds"] == group["seeds"]  # another group's, if any
    assert configs[0] == configs[1]
    states = [torch.load(d / "checkpoint.pt", weights_only=False) for d in (grouped, single)]
    for key in ("model", "strategy"):
        _tensors_close(states[0][key], states[1][key], key)
    opt = [s["optimizer"] for s in states]
    assert opt[0]["param_groups"] == opt[1]["param_groups"]
    _tensors_close(opt[0]["state"], opt[1]["state"], "optimizer")
    assert states[0]["scheduler"] == states[1]["scheduler"]
    assert (states[0]["epoch"], states[0]["step"]) == (states[1]["epoch"], states[1]["step"])


@pytest.mark.usefixtures(float64.__name__)
@pytest.mark.parametrize(("space", "strategy"), CASES)
def test_group_equals_separate_searches(space: str, strategy: str, source: str, tmp_path: Path) -> None:
    sets = (f"strategy.name={strategy}", *SPACE_SETS.get(space, ()))
    # second order costs 4 forward/backward passes a step: one epoch (4 steps, so momentum and Adam
    # statistics are used from the second step on) and two seeds keep the test short
    seeds, epochs = (SEEDS[:2], 1) if strategy == "darts2" else (SEEDS, EPOCHS)
    listed = ",".join(map(str, seeds))
    out = cli([*search_argv(source, tmp_path / "g-s{seed}", epochs, *sets, space=space), "--seeds", listed])
    for s in seeds:
        assert f"g-s{s}/found.json" in out
        cli(search_argv(source, tmp_path / f"one-s{s}", epochs, *sets, f"run.seed={s}", space=space))
        _same_run(tmp_path / f"g-s{s}", tmp_path / f"one-s{s}")


class _InterruptAfter:
    """Wraps the step body: sends this process SIGINT once ``steps`` steps ran (the loop saves and stops)."""

    def __init__(self, steps: int):
        self.steps, self.calls = steps, 0

    def wrap(self, call):
        def step(body, *args, **kwargs):
            out = call(body, *args, **kwargs)
            self.calls += 1
            if self.calls == self.steps:
                os.kill(os.getpid(), signal.SIGINT)
            return out

        return step


@pytest.fixture(scope="module")
def whole_group(source: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted float64 darts group of seeds 3 and 5, which the interrupted ones must match."""
    root = tmp_path_factory.mktemp("whole")
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        cli([*search_argv(source, root / "whole-s{seed}", EPOCHS, "strategy.name=darts"), "--seeds", "3,5"])
    finally:
        torch.set_default_dtype(before)
    return root


@pytest.mark.usefixtures(float64.__name__)
@pytest.mark.parametrize("stop_after", [6, 4])  # 4 steps an epoch: inside epoch 2; after epoch 1's last step
def test_interrupted_group_resumes_exactly(
    stop_after: int, whole_group: Path, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pflnas.train.search_step import SearchStep

    argv = search_argv(source, tmp_path / "g-s{seed}", EPOCHS, "strategy.name=darts")
    interrupt = _InterruptAfter(stop_after)
    with monkeypatch.context() as patch:
        patch.setattr(SearchStep, "__call__", interrupt.wrap(SearchStep.__call__))
        assert main([*argv, "--seeds", "3,5"]) == 130
    assert not (tmp_path / "g-s3" / "found.json").exists()
    cli(["search", "--resume", str(tmp_path / "g-s5")])  # any member resumes the whole group
    for s in (3, 5):
        _same_run(tmp_path / f"g-s{s}", whole_group / f"whole-s{s}")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "0-2", "--set", "strategy.name=gdas"], "strategy 'gdas' has no grouped form"),
        (["--seeds", "0-2", "--seed", "1"], "--seed and --seeds both name the seeds"),
        (["--seeds", "2-0"], "not an increasing range"),
        (["--seeds", "0,x"], "is not a seed or a range"),
        (["--seeds", "1,1"], "names seed 1 twice"),
        (["--seeds", "0-1", "--set", "space.layout=batched"], "drop space.layout=batched"),
        (["--seeds", "0-1", "--set", "run.nonfinite=skip"], "run.nonfinite=stop"),
        (["--seeds", "0-1", "--set", "strategy.name=random"], "runs trials"),
    ],
)
def test_refusals_are_one_line(
    extra: list[str], message: str, source: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main([*search_argv(source, tmp_path / "r-s{seed}", 1), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0], err
    assert not list(tmp_path.glob("r-s*"))  # refused before any run directory was claimed


def test_block_space_refusals_are_one_line(
    source: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = search_argv(source, tmp_path / "b-s{seed}", 1, space="resnet50_block")
    for cell_only in ("space.init_channels=4", "space.layers=3"):  # a block space has a skeleton instead
        del argv[argv.index(cell_only) - 1 : argv.index(cell_only) + 1]
    assert main([*argv, "--seeds", "0-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'resnet50_block' is a resnet_block space" in err[0], err
    assert "grouped supernets are for darts_cell and nb201_cell spaces" in err[0]


def test_one_directory_per_seed(source: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = search_argv(source, tmp_path / "same", 1)
    argv[argv.index("--out") + 1] = str(tmp_path / "same")  # no {seed}: OUT/seed<N>
    cli([*argv, "--seeds", "4,6"])
    assert {p.name for p in (tmp_path / "same").iterdir()} == {"seed4", "seed6"}
    assert main(["search", "--resume", str(tmp_path / "same" / "seed4"), "--seeds", "1"]) == 2
    assert "drop --seeds" in capsys.readouterr().err
    cli([*search_argv(source, tmp_path / "one-s{seed}", 1), "--seed", "9"])  # one seed fills {seed} in too
    assert (tmp_path / "one-s9" / "found.json").is_file()


@pytest.mark.parametrize(
    ("text", "seeds"), [("0-9", list(range(10))), ("0,3,7", [0, 3, 7]), ("4-5, 1", [4, 5, 1]), ("7", [7])]
)
def test_parse_seeds(text: str, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "-1", "1-", "a", "3-1", "1,,2", "0-2,2"])
def test_parse_seeds_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds(text)


def test_nan_in_one_seed_stops_the_group_naming_that_seed(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from pflnas.train.seed_group import SeedGroupRun

    original = SeedGroupRun.setup

    def setup(self, *args, **kwargs):
        original(self, *args, **kwargs)

        def poison(module, inputs, output):  # seed 7's (index 1) logits in the training steps
            if module.training:
                return torch.cat([output[:1], output[1:] * float("nan")])
            return None

        self.model.register_forward_hook(poison)

    monkeypatch.setattr(SeedGroupRun, "setup", setup)
    assert main([*search_argv(source, tmp_path / "n-s{seed}", 1), "--seeds", "4,7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN/Inf in" in err[0], err
    assert err[0].endswith("(seeds whose numbers went non-finite: 7)"), err[0]
    assert not (tmp_path / "n-s4" / "found.json").exists()


def test_torchrun_is_refused_in_one_line(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([*search_argv(source, tmp_path / "t-s{seed}", 1), "--seeds", "0,1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "without torchrun" in err[0], err
    assert not list(tmp_path.glob("t-s*"))
