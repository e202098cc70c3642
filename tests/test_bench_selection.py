"""What multi-trial seeds on NAS-Bench-201 select on (``--selection``): zero-cost, proxy, oracle."""

from __future__ import annotations

import json
import math

import pytest
from _bench import bench, needs_table

from pflnas.bench import zero_cost
from pflnas.bench.nb201 import NB201Table, load_nb201_table
from pflnas.bench.runner import MultiTrialPlan, run_multitrial_seed
from pflnas.bench.selection import OracleSignal, SelectionSpec, SignalFactory, to_unit
from pflnas.bench.zero_cost import ZeroCostConfig, ZeroCostScorer, fixed_batch

pytestmark = [needs_table, pytest.mark.usefixtures("one_thread")]
SKIP, NONE, C3, C1, POOL = range(5)


@pytest.fixture(scope="module")
def table():
    return load_nb201_table()


@pytest.fixture
def isolated(monkeypatch, tmp_path, session_cache):
    """Decoded data from the session cache; zero-cost scores and qualities in a fresh folder."""
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)
    monkeypatch.setattr(zero_cost, "cache_root", lambda: tmp_path / "zero-cost-cache")
    return tmp_path / "zero-cost-cache"


def test_to_unit_keeps_the_order():
    values = [-math.inf, -1e6, -3.0, 0.0, 1e-9, 371.25, 371.26, 1e9]
    mapped = [to_unit(v) for v in values]
    assert mapped == sorted(mapped) and len(set(mapped)) == len(mapped)
    assert mapped[0] == 0.0 and all(0.0 <= m <= 1.0 for m in mapped)


def test_naswot_is_deterministic_and_cached(table, cifar_source, isolated):
    cfg = ZeroCostConfig(batch_size=8, init_channels=4)
    images = fixed_batch(cfg, cifar_source)
    scorer = ZeroCostScorer(cfg, images, table)
    codes = [(NONE,) * 6, (C3,) * 6, (C3, C3, SKIP, C3, C1, C3), (SKIP, POOL, SKIP, C1, NONE, POOL)]
    scores = [scorer.score_code(c) for c in codes]
    assert scores[0] == -math.inf  # no path from the input: every later code is constant, K singular
    assert all(math.isfinite(s) and s > 0 for s in scores[1:]) and scorer.computed == 4
    scorer.save()
    again = ZeroCostScorer(cfg, fixed_batch(cfg, cifar_source), table)  # the same batch, read from disk
    assert [again.score_code(c) for c in codes] == scores and again.computed == 0
    for path in isolated.glob("*.json"):
        path.unlink()
    fresh = ZeroCostScorer(cfg, images, table)
    assert [fresh.score_code(c) for c in codes] == scores and fresh.computed == 4
    other = ZeroCostScorer(ZeroCostConfig(batch_size=8, init_channels=4, init_seed=1), images, table)
    assert other.key != scorer.key and other.score_code(codes[1]) != scores[1]


def test_zero_cost_choice_ignores_the_reported_accuracy(table, cifar_source, isolated):
    """The same seed picks the same cell whatever accuracies the table reports; the oracle does not."""
    shuffled = NB201Table(table.acc[::-1].copy(), table.metric)
    spec = SelectionSpec("zero-cost", ZeroCostConfig(batch_size=8, init_channels=4), data_dir=cifar_source)
    real, fake = SignalFactory(spec, table), SignalFactory(spec, shuffled)
    plan = MultiTrialPlan("evolution", 14, real.settings(), population=5)
    a = run_multitrial_seed(table, plan, 0, real.for_seed(0))
    b = run_multitrial_seed(shuffled, plan, 0, fake.for_seed(0))
    assert a["code"] == b["code"] and a["signal"] == b["signal"]
    assert a["accuracy"] == table.accuracy_of(tuple(a["code"])) != b["accuracy"]
    assert a["curve"][-1] == a["accuracy"] and a["budget"]["images"] == 14 * 8
    oracle = MultiTrialPlan("evolution", 14, {"selection": "oracle"}, population=5)
    o = run_multitrial_seed(table, oracle, 0, OracleSignal(table))
    assert o["accuracy"] == max(o["curve"]) and o["selection"] == "oracle (selected on test)"


def test_cli_zero_cost_and_oracle_side_by_side(tmp_path, capsys, cifar_source, isolated):
    args = ("--strategy", "random", "--selection", "zero-cost,oracle", "--seeds", "2", "--queries", "6")
    rc, out, err = bench(
        tmp_path, capsys, *args, "--zero-cost-batch", "8", "--data-dir", cifar_source, "--json"
    )
    assert rc == 0, err
    report = json.loads(out)
    zc, oracle = report["strategies"]
    assert (zc["selection"], oracle["selection"]) == ("zero-cost", "oracle (selected on test)")
    not_measured = {"kendall_tau": None, "measured": False}
    assert (
        not_measured.items() <= zc["signal_quality"].items()
        and "--zero-cost-quality" in zc["signal_quality"]["how"]
    )
    assert report["zero_cost_quality"] == zc["signal_quality"] and "signal_quality" not in oracle
    assert zc["budget"]["per_seed"] == {"queries": 6, "epochs_per_query": 0}
    assert zc["budget"]["total"]["queries"] == 12 and zc["budget"]["total"]["images"] == 12 * 8
    for z, o in zip(zc["runs"], oracle["runs"]):
        assert z["selection"] == "zero-cost" and z["budget"]["images"] == 6 * 8
        # random search queries the same cells whatever it selects on; the oracle keeps the best of them
        assert o["accuracy"] == max(o["curve"]) >= z["accuracy"]
    seeds = tmp_path / "bench" / "random"
    stored = {p.parent.name: json.loads(p.read_text()) for p in seeds.glob("*/seed0.json")}
    assert sorted(stored) == ["oracle", "zero-cost"]
    assert stored["zero-cost"]["settings"]["signal"]["selection"] == "zero-cost"
    rc, text, err = bench(tmp_path, capsys, *args, "--zero-cost-batch", "8", "--data-dir", cifar_source)
    assert rc == 0 and err.count("reusing") == 4
    assert "| random | oracle (selected on test) | 2 | 6 queries |" in text
    assert "not measured; measure it with `pflnas bench nb201 --zero-cost-quality" in text


def test_cli_zero_cost_quality_is_measured_once_and_named(
    tmp_path, capsys, cifar_source, isolated, monkeypatch
):
    monkeypatch.setattr(ZeroCostScorer, "_compute", lambda self, code: self.table.accuracy_of(code))
    common = ("--zero-cost-batch", "8", "--data-dir", cifar_source)
    rc, out, err = bench(tmp_path, capsys, "--zero-cost-quality", *common, "--json")
    assert rc == 0, err
    quality = json.loads(out)
    assert quality["measured"] and quality["kendall_tau"] == pytest.approx(1.0) and quality["cells"] == 1000
    assert quality["score_settings"]["batch_size"] == 8 and "1000/1000 cells scored" in err

    def fail(self, code):
        raise AssertionError("the quality is cached; nothing is scored again")

    monkeypatch.setattr(ZeroCostScorer, "_compute", fail)
    rc, out, _ = bench(tmp_path, capsys, "--zero-cost-quality", *common, "--json")
    assert rc == 0 and json.loads(out) == quality
    monkeypatch.setattr(ZeroCostScorer, "_compute", lambda self, code: self.table.accuracy_of(code))
    rc, out, err = bench(
        tmp_path, capsys, "--strategy", "evolution", "--seeds", "1", "--queries", "5", *common
    )
    assert rc == 0, err
    assert "Kendall tau 1.000 against the table's accuracy over 1000 sampled cells" in out


def test_cli_proxy_trains_each_queried_cell(tmp_path, capsys, cifar_source, session_cache, monkeypatch):
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)
    proxy = ("--proxy-epochs", "1", "--proxy-subset", "64", "--proxy-channels", "4", "--proxy-layers", "1")
    rc, out, err = bench(
        tmp_path,
        capsys,
        *("--strategy", "random", "--selection", "proxy", "--seeds", "1", "--queries", "2", *proxy),
        *("--proxy-batch-size", "16", "--data-dir", cifar_source, "--device", "cpu", "--json"),
    )
    assert rc == 0, err
    (summary,) = json.loads(out)["strategies"]
    (run,) = summary["runs"]
    assert summary["selection"] == run["selection"] == "proxy"
    assert summary["settings"]["signal"]["proxy"]["subset"] == 64
    # 32 weight images in 2 batches of 16, then the 32 held-out images, per query
    assert run["budget"] == {**run["budget"], "queries": 2, "epochs_per_query": 1, "images": 2 * (32 + 32)}
    assert run["budget"]["signal_computations"] == 2 and 0.0 <= run["signal"] <= 100.0


@pytest.mark.slow
def test_cli_proxy_seeds_run_in_parallel_jobs(tmp_path, capsys, cifar_source, session_cache, monkeypatch):
    """--jobs 2 trains the two seeds' cells in two processes; the summary then reuses their files."""
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)
    tiny = (
        "--proxy-subset",
        "64",
        "--proxy-channels",
        "4",
        "--proxy-layers",
        "1",
        "--proxy-batch-size",
        "16",
    )
    rc, out, err = bench(
        tmp_path,
        capsys,
        *("--strategy", "random", "--selection", "proxy", "--seeds", "2", "--queries", "2", *tiny),
        *("--data-dir", cifar_source, "--device", "cpu", "--jobs", "2", "--json"),
    )
    assert rc == 0, err
    assert "running 2 seeds in 2 processes" in err and err.count("(proxy) seed") >= 2 and "reusing" in err
    runs = json.loads(out)["strategies"][0]["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and all(r["selection"] == "proxy" for r in runs)
    folder = tmp_path / "bench" / "random" / "proxy"
    assert all((folder / f"seed{k}.log").is_file() for k in (0, 1))
