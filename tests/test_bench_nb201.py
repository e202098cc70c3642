"""NAS-Bench-201 ground truth (pflnas.bench) and ``pflnas bench nb201``."""

from __future__ import annotations

import importlib.metadata
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _bench import HAVE_TABLE, needs_table
from _bench import bench as _bench

from pflnas.arch import load_architecture
from pflnas.arch.record import Architecture
from pflnas.bench import nb201
from pflnas.bench.nb201 import EDGES, OPS, load_nb201_table, nb201_string
from pflnas.errors import ArchitectureError, ConfigError
from pflnas.spaces import load_space

pytestmark = pytest.mark.usefixtures("one_thread")

SKIP, NONE, C3, C1, POOL = range(5)  # the package's op indices


@pytest.fixture(scope="module")
def table():
    return load_nb201_table()


def test_missing_package_is_one_clear_error(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(nb201.importlib.metadata, "distribution", missing)
    with pytest.raises(ConfigError, match=r"analog-nasbench: pip install 'pflnas\[bench\]'"):
        nb201.data_path()


@needs_table
def test_table_holds_every_cell_and_published_facts(table):
    assert len(table) == 15625 == len(OPS) ** len(EDGES)
    arch, best = table.best()
    # AnalogNAS-Bench's digital baseline (NAS-Bench-201 200-epoch protocol, retrained): best 94.07 on the
    # CIFAR-10 test set, near NAS-Bench-201's own 94.37
    assert 93.8 < best < 94.6 and best == table.acc.max()
    # the best cells are NAS-Bench-201's ResNet-like ones: convs everywhere but skip_connect on 0->3
    assert table.encode(arch)[EDGES.index((3, 0))] == SKIP
    assert table.accuracy_of((C3, C3, SKIP, C3, C3, C3)) > 93.5  # NAS-Bench-201's best cell
    assert table.accuracy_of((NONE,) * 6) == pytest.approx(10.0)  # no path from input to output: chance
    assert table.accuracy_of((C3,) * 6) > table.accuracy_of((C1,) * 6) > table.accuracy_of((SKIP,) * 6)
    stats = table.stats(0.01)
    assert stats.top_cells == 157 and stats.top_threshold <= stats.top_mean <= stats.best == best
    assert 0.0 < stats.top_param_free_share < 0.5  # the best cells are conv-heavy


@needs_table
def test_edge_order_matches_the_data(table):
    """Exactly the 3-edge cuts of the cell's DAG (under the documented edge order) are at chance whatever
    the other edges hold: the key positions are the edges 0->1, 0->2, 0->3, 1->2, 1->3, 2->3."""
    grid = table.acc.reshape((5,) * 6)
    at_chance = set()
    for positions in itertools.combinations(range(6), 3):
        index = tuple(NONE if i in positions else slice(None) for i in range(6))
        if np.all(grid[index] == 10.0):
            at_chance.add(frozenset(EDGES[i] for i in positions))
    assert at_chance == {
        frozenset({(1, 0), (2, 0), (3, 0)}),  # everything leaving the input
        frozenset({(3, 0), (3, 1), (3, 2)}),  # everything entering the output
        frozenset({(1, 0), (3, 0), (3, 2)}),  # 0->1, 0->3, 2->3: 0->2->3 and 0->1->... both cut
    }


@needs_table
def test_codes_round_trip_through_valid_architectures(table):
    space = load_space("nb201")
    arch = table.architecture((SKIP, NONE, C3, C1, POOL, SKIP))
    ops = {(e.node, e.source): e.op for e in arch.cells[0].edges}
    assert ops == {
        (1, 0): "skip_connect",
        (2, 0): "none",
        (3, 0): "conv_3x3",
        (2, 1): "conv_1x1",
        (3, 1): "avg_pool_3x3",
        (3, 2): "skip_connect",
    }
    assert set(OPS) == set(space.ops)
    # skip, avg-pool, skip are parameter-free among the 5 non-none ops
    assert arch.param_free_share() == pytest.approx(3 / 5)
    assert nb201_string(arch) == (
        "|skip_connect~0|+|none~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|skip_connect~2|"
    )
    for code in itertools.islice(itertools.product(range(5), repeat=6), 0, None, 97):
        again = Architecture.from_dict(table.architecture(code).to_dict())  # validated on the way in
        assert again.space.name == "nb201" and table.encode(again) == code
        assert table.accuracy(again) == table.accuracy_of(code)


@needs_table
def test_encode_refuses_what_the_table_cannot_score(table):
    cell_v1 = load_space("cell_v1")
    from pflnas.arch.homogeneous import homogeneous_architecture

    with pytest.raises(ArchitectureError, match="nb201_cell"):
        table.encode(homogeneous_architecture(cell_v1, "conv_3x3"))
    individual = load_space("nb201").replace(alpha_mode="individual", layers=1)
    cells = [table.architecture((C3,) * 6).cells[0]] * 3
    cells = [type(c)(f"cell{i}", c.type, c.edges, c.concat) for i, c in enumerate(cells)]
    same = Architecture(individual, tuple(cells))
    assert table.accuracy(same) == table.accuracy_of((C3,) * 6)
    cells[1] = type(cells[1])("cell1", "normal", table.architecture((C1,) * 6).cells[0].edges, (3,))
    with pytest.raises(ArchitectureError, match="3 different cells|2 different cells"):
        table.encode(Architecture(individual, tuple(cells)))


@needs_table
def test_cli_random_json_and_reuse(tmp_path, capsys, table):
    oracle = ("--strategy", "random", "--selection", "oracle", "--seeds", "2", "--queries", "5")
    rc, out, err = _bench(tmp_path, capsys, *oracle, "--json")
    assert rc == 0, err
    report = json.loads(out)
    (summary,) = report["strategies"]
    assert summary["strategy"] == "random" and summary["seeds"] == [0, 1]
    assert summary["selection"] == "oracle (selected on test)"  # named as such wherever it appears
    best = table.best_accuracy()
    assert report["table"]["best"] == best
    for run in summary["runs"]:
        assert run["selection"] == "oracle (selected on test)"
        assert run["regret"] >= 0 and run["regret"] == pytest.approx(best - run["accuracy"])
        assert run["accuracy"] == table.accuracy_of(tuple(run["code"]))
        assert run["queries"] == 5 and len(run["curve"]) == 5
        assert run["curve"] == sorted(run["curve"]) and run["curve"][-1] == run["accuracy"]
        assert run["budget"]["queries"] == 5 and run["budget"]["images"] == 0
    assert summary["regret"]["mean"] == pytest.approx(np.mean([r["regret"] for r in summary["runs"]]))
    assert summary["anytime"]["queries"] == [1, 2, 3, 4, 5]
    regrets = summary["anytime"]["regret_mean"]
    assert regrets == sorted(regrets, reverse=True) and regrets[-1] == pytest.approx(
        summary["regret"]["mean"]
    )
    assert summary["top_param_free_share"] == report["table"]["top_param_free_share"]
    assert summary["param_free_share"]["chance"] == 0.5
    seeds = tmp_path / "bench" / "random" / "oracle"
    assert sorted(p.name for p in seeds.glob("seed*.json")) == ["seed0.json", "seed1.json"]

    # the same command again reuses the finished seeds; another budget must not silently mix with them
    rc, out2, err = _bench(tmp_path, capsys, *oracle, "--json")
    assert rc == 0 and "reusing" in err and json.loads(out2)["strategies"][0]["runs"] == summary["runs"]
    rc, _, err = _bench(tmp_path, capsys, *oracle[:-1], "6")
    assert rc == 2 and "other settings" in err and "--overwrite" in err
    rc, out3, _ = _bench(
        tmp_path,
        capsys,
        "--strategy",
        "random",
        "--selection",
        "oracle",
        "--seeds",
        "1",
        "--queries",
        "6",
        "--overwrite",
    )
    assert rc == 0 and "| random | oracle (selected on test) | 1 | 6 queries |" in out3


@needs_table
def test_cli_interrupted_bench_keeps_finished_seeds(tmp_path, capsys, monkeypatch):
    from pflnas.cli import cmd_bench

    real = cmd_bench.run_multitrial_seed

    def interrupted(table, plan, seed, signal):
        if seed == 1:
            raise KeyboardInterrupt
        return real(table, plan, seed, signal)

    args = ("--strategy", "evolution", "--selection", "oracle", "--seeds", "3", "--queries", "12")
    monkeypatch.setattr(cmd_bench, "run_multitrial_seed", interrupted)
    rc, _, _ = _bench(tmp_path, capsys, *args)
    assert rc == 130
    done = tmp_path / "bench" / "evolution" / "oracle"
    assert [p.name for p in done.glob("seed*.json")] == ["seed0.json"]
    first = json.loads((done / "seed0.json").read_text())["result"]
    monkeypatch.setattr(cmd_bench, "run_multitrial_seed", real)
    rc, out, err = _bench(tmp_path, capsys, *args, "--json")
    assert rc == 0 and "evolution (oracle) seed 0: reusing" in err
    runs = json.loads(out)["strategies"][0]["runs"]
    assert [r["seed"] for r in runs] == [0, 1, 2] and runs[0] == first


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strategy", "nsga2"], "two objectives"),
        (["--strategy", "nope"], "unknown strategy 'nope'"),
        (["--strategy", "darts", "--queries", "5"], "--queries is the budget of multi-trial"),
        (["--strategy", "random", "--epochs", "2"], "--epochs does not apply here"),
        (["--strategy", "random", "--seeds", "0"], "--seeds must be >= 1"),
        (["--strategy", "darts", "--jobs", "0"], "--jobs must be >= 1"),
        (["--strategy", "darts", "--device", "cuda", "--jobs", "4"], "no CUDA GPU is visible"),
        (["--strategy", "darts", "--set", "space.name=darts"], "fixed by the bench"),
        (["--strategy", "darts", "--set", "space.alpha_mode=individual"], "alpha_mode=shared"),
        (["--strategy", "darts", "--selection", "oracle"], "one-shot strategies select with their own"),
        (["--strategy", "random", "--selection", "test"], "unknown --selection 'test'"),
        (["--strategy", "random", "--selection", "oracle,oracle"], "names a selection twice"),
        (["--strategy", "random", "--proxy-epochs", "2"], "--proxy-epochs does not apply here"),
        (["--strategy", "random", "--selection", "proxy", "--proxy-subset", "0"], "--proxy-subset must be"),
        (["--strategy", "darts", "--zero-cost-batch", "8"], "--zero-cost-batch does not apply here"),
        (["--strategy", "random", "--selection", "oracle", "--device", "cpu"], "--device does not apply"),
        (["--strategy", "random", "--op-wins"], "--op-wins reads the table alone"),
        ([], "name at least one --strategy"),
        (["--strategy", "random", "--data-dir", "/nonexistent/cifar"], "does not exist"),
        (
            ["--strategy", "random", "--selection", "proxy", "--data-dir", "/nonexistent/cifar"],
            "does not exist",
        ),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, capsys, args, message):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    if "--data-dir" in args and not HAVE_TABLE:
        pytest.skip("the data is checked after the table is loaded")
    rc, _, err = _bench(tmp_path, capsys, *args)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


@needs_table
@pytest.mark.slow
def test_cli_oneshot_scores_the_found_cell(tmp_path, capsys, cifar_source, session_cache, monkeypatch, table):
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)
    tiny = ["space.init_channels=4", "space.layers=1", "data.subset=64", "data.batch_size=16"]
    tiny += ["data.eval_limit=32", "run.progress=false"]
    rc, out, err = _bench(
        tmp_path,
        capsys,
        *("--strategy", "darts", "--seeds", "1", "--epochs", "1", "--data-dir", cifar_source, "--json"),
        *(x for s in tiny for x in ("--set", s)),
    )
    assert rc == 0, err
    run = json.loads(out)["strategies"][0]["runs"][0]  # stdout is the JSON alone (epoch lines go to stderr)
    found = load_architecture(run["found"])
    assert found.provenance["strategy"] == "darts" and found.space.name == "nb201"
    assert (
        run["accuracy"] == table.accuracy(found) and run["regret"] == table.best_accuracy() - run["accuracy"]
    )
    assert run["epochs"] == 1 and run["code"] == list(table.encode(found))


@needs_table
@pytest.mark.slow
def test_cli_oneshot_jobs_match_the_sequential_bench(
    tmp_path, capsys, cifar_source, session_cache, monkeypatch
):  # noqa: E501
    """--jobs 2 searches two seeds in two processes; each seed finds the same cell with the same
    probabilities as in the sequential bench, and the summary reuses the workers' files."""
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)
    tiny = ["space.init_channels=4", "space.layers=1", "data.subset=64", "data.batch_size=16"]
    tiny += ["data.eval_limit=32", "run.progress=false", "run.threads=1"]
    common = ("--strategy", "darts", "--seeds", "2", "--epochs", "1", "--data-dir", cifar_source, "--json")
    sets = [x for s in tiny for x in ("--set", s)]
    rc, out, err = _bench(tmp_path, capsys, *common, "--jobs", "2", *sets)
    assert rc == 0, err
    assert "running 2 seeds in 2 processes" in err and "darts seed 1: reusing" in err
    parallel = json.loads(out)["strategies"][0]["runs"]
    assert [r["seed"] for r in parallel] == [0, 1]
    assert all((tmp_path / "bench" / "darts" / f"seed{k}" / "search.log").is_file() for k in (0, 1))
    rc, out, err = _bench(tmp_path / "seq", capsys, *common, *sets)
    assert rc == 0, err
    sequential = json.loads(out)["strategies"][0]["runs"]
    for p, q in zip(parallel, sequential):
        assert p["code"] == q["code"] and p["accuracy"] == q["accuracy"]
        a, b = (json.loads(Path(r["found"]).read_text()) for r in (p, q))
        assert a["probabilities"] == b["probabilities"]
