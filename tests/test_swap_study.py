"""The swap study: counterfactuals built from the op registry for every space, the paired statistics on
numbers worked by hand, study-file validation, and a tiny study run and reported end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from _data_fixtures import make_archive, make_tree

from pflnas.analysis.inference import holm
from pflnas.analysis.paired import paired_summary, verdict
from pflnas.analysis.swap_report import pooled_summary, swap_summary
from pflnas.arch.counterfactual import apply_swap, possible_swaps, select_swaps
from pflnas.arch.homogeneous import homogeneous_architecture
from pflnas.arch.record import Architecture, BlockChoice, CellArch, Edge, load_architecture, save_architecture
from pflnas.arch.sites import choice_sites
from pflnas.cli.main import main
from pflnas.ops import PARAM_FREE, get_op
from pflnas.spaces import list_spaces, load_space
from pflnas.spaces.labels import edge_label

ARCHS = Path(__file__).parents[1] / "experiments" / "archs"
QUICK_ARCH = ARCHS / "quick_cell_v1_s0.json"


def _random_arch(space_name: str, seed: int) -> Architecture:
    """A valid architecture of the space with random ops (``none`` included where the space keeps it) and
    random final probabilities on every choice."""
    space = load_space(space_name)
    rng = np.random.default_rng(seed)
    probs = {}
    for label, site in choice_sites(space).items():
        ops = space.group_ops(site.group) if space.is_block else space.ops
        probs[label] = dict(zip(ops, (round(float(p), 6) for p in rng.dirichlet(np.ones(len(ops))))))
        probs[label][ops[0]] += 1 - sum(probs[label].values())
    if space.is_block:
        blocks = [BlockChoice(g, t, str(rng.choice(space.group_ops(g)))) for g, t in space.alpha_groups()]
        return Architecture(space, (), probs, {}, tuple(blocks))
    kept_ops = [op for op in space.ops if not get_op(op).is_zero or space.keep_edges is None]
    cells = []
    for group, ctype in space.alpha_groups():
        pairs = (
            space.edges()
            if space.keep_edges is None
            else [(n, s) for n in space.node_ids() for s in (n - 1, n - 2)]
        )
        edges = tuple(Edge(n, s, str(rng.choice(kept_ops))) for n, s in pairs)
        cells.append(CellArch(group, ctype, edges, space.concat()))
    return Architecture(space, tuple(cells), probs, {})


def _expected_replacement(arch: Architecture, label: str, stride: int, old_op: str) -> str | None:
    """The rule, recomputed from the registry: most probable op of the other family runnable at stride."""
    other = get_op(old_op).role(stride) != PARAM_FREE
    candidates = [
        op
        for op in arch.space.ops
        if get_op(op).supports(arch.space.context, stride)
        and not get_op(op).is_zero
        and (get_op(op).role(stride) == PARAM_FREE) == other
    ]
    if get_op(old_op).is_zero or not candidates:
        return None
    probs = arch.probabilities[label]
    best = max(probs[op] for op in candidates)
    return next(op for op in candidates if probs[op] == best)


@pytest.mark.parametrize("space_name", list_spaces())
@pytest.mark.parametrize("seed", [0, 1])
def test_every_swap_flips_param_freeness_and_nothing_else(space_name, seed):
    arch = _random_arch(space_name, seed)
    swaps = possible_swaps(arch)
    sites = choice_sites(arch.space)
    decisions = arch.decisions()
    expected = 0
    for d, (label, site) in zip(decisions, _decision_sites(arch, sites)):
        expected += _expected_replacement(arch, label, site.stride, d.op) is not None
    assert len(swaps) == expected > 0
    for swap in swaps:
        assert swap.param_free_pick == (get_op(swap.old_op).role(swap.stride) == PARAM_FREE)
        assert (get_op(swap.new_op).role(swap.stride) == PARAM_FREE) != swap.param_free_pick
        assert not get_op(swap.new_op).is_zero and not get_op(swap.old_op).is_zero
        assert swap.new_op == _expected_replacement(arch, swap.label, swap.stride, swap.old_op)
        assert swap.rule == "probabilities" and swap.stride == sites[swap.label].stride
        probs = arch.probabilities[swap.label]
        assert (swap.p_old, swap.p_new) == (probs[swap.old_op], probs[swap.new_op])
        after = apply_swap(arch, swap).decisions()  # the constructor validated the record
        changed = [i for i, (a, b) in enumerate(zip(decisions, after)) if a != b]
        assert len(after) == len(decisions) and len(changed) == 1
        assert after[changed[0]].op == swap.new_op and decisions[changed[0]].op == swap.old_op


def _decision_sites(arch: Architecture, sites: dict) -> list:
    if arch.space.is_block:
        return [(f"{b.name}.op", sites[f"{b.name}.op"]) for b in arch.blocks]
    labels = [edge_label(c.name, e.node, e.source) for c, e in arch.kept_edges()]
    return [(label, sites[label]) for label in labels]


def test_stride_two_skip_connect_is_trainable():
    """A reduction cell's input edges run at stride 2, where skip_connect is a FactorizedReduce."""
    space = load_space("cell_v1")
    arch = homogeneous_architecture(space, "skip_connect")
    swaps = {s.label: s for s in possible_swaps(arch)}
    reduce_cell = next(c.name for c in arch.cells if c.type == "reduce")
    strided = swaps[edge_label(reduce_cell, 2, 0)]
    assert strided.stride == 2 and not strided.param_free_pick
    assert strided.new_op == "max_pool_3x3" and strided.rule == "op order"  # first parameter-free op
    plain = swaps[edge_label("cell0", 2, 0)]
    assert plain.stride == 1 and plain.param_free_pick and plain.new_op == "conv_3x3"
    pooled = homogeneous_architecture(space, "max_pool_3x3")  # max-pool at stride 2 may become skip_connect
    probs = {edge_label(reduce_cell, 2, 0): dict.fromkeys(space.ops, 0.1) | {"skip_connect": 0.6}}
    pooled = Architecture(space, pooled.cells, probs, {})
    flip = {s.label: s for s in possible_swaps(pooled)}[edge_label(reduce_cell, 2, 0)]
    assert flip.new_op == "skip_connect" and flip.rule == "probabilities" and flip.param_free_pick


def test_swap_selection_is_deterministic_and_capped():
    swaps = possible_swaps(load_architecture(QUICK_ARCH))
    free = [s for s in swaps if s.param_free_pick]
    assert select_swaps(swaps, "param_free") == free
    assert all(not s.param_free_pick for s in select_swaps(swaps, "trainable"))
    three = select_swaps(swaps, "all", 3)
    assert three == select_swaps(swaps, "all", 3) and len(three) == 3
    assert sum(s.param_free_pick for s in three) == 2  # parameter-free picks get half the cap, rounded up
    assert [swaps.index(s) for s in three] == sorted(swaps.index(s) for s in three)  # network order
    assert select_swaps(free, "param_free", 1) == [free[len(free) // 2]]  # the middle one
    assert select_swaps(free, "trainable") == []


def test_paired_interval_and_tests_match_a_hand_computation():
    d = [1.0, 2.0, 4.0]
    s = paired_summary(d)
    mean, sd = 7 / 3, math.sqrt(7 / 3)  # deviations -4/3, -1/3, 5/3: squares sum to 42/9, over n-1 = 2
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2} from a t table
    assert s.n == 3 and s.mean == pytest.approx(mean) and s.sd == pytest.approx(sd)
    assert (s.ci_low, s.ci_high) == (pytest.approx(mean - half), pytest.approx(mean + half))
    t = mean / (sd / math.sqrt(3))
    assert t == pytest.approx(2.6457513)
    assert s.t_p == pytest.approx(0.118, abs=1e-3)  # two-sided p of t = 2.646 on 2 df
    assert s.wilcoxon_p == pytest.approx(0.25) and s.min_wilcoxon_p == pytest.approx(0.25)  # 2 / 2**3
    assert s.mdd80 > abs(s.ci_high - s.mean)  # with 3 seeds only a large difference has 80% power
    words = verdict(s, s.t_p, "cf better", "cf worse")
    assert words.startswith("no detectable difference (95% CI [-1.46, +6.13] pp, n=3 seeds")
    one = paired_summary([0.7])
    assert one.n == 1 and math.isnan(one.ci_low) and math.isnan(one.t_p)
    assert verdict(one, math.nan, "a", "b") == "one seed (+0.70 pp): no interval, no test; add seeds"
    clear = paired_summary([1.0, 1.2, 0.9, 1.1])
    assert verdict(clear, 0.01, "cf better", "cf worse").startswith("cf better (95% CI [+0.84, +1.26] pp")
    assert "not after Holm" in verdict(clear, 0.2, "cf better", "cf worse")
    assert holm([0.01, 0.04, math.nan, 0.03]) == pytest.approx([0.03, 0.06, math.nan, 0.06], nan_ok=True)


def _pairs(rows: list[tuple[str, bool, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "study": "s",
                "arch": "a",
                "swap": name,
                "label": name,
                "old_op": "max_pool_3x3" if pf else "conv_3x3",
                "new_op": "conv_3x3" if pf else "max_pool_3x3",
                "stride": 1,
                "param_free_pick": pf,
                "rule": "probabilities",
                "p_old": 0.3,
                "p_new": 0.2,
                "seed": seed,
                "delta_pp": delta,
                "d_params": 100 if pf else -100,
                "d_macs": 10,
                "d_latency_ms": 0.1,
            }
            for name, pf, seed, delta in rows
        ]
    )


def test_pooled_rows_average_within_a_seed_first_and_holm_spans_all_swaps():
    # seed 0 has two parameter-free swaps (-2, -4), seed 1 only one (-1): per seed 3 and 1, mean 2
    pairs = _pairs(
        [("e1", True, 0, -2.0), ("e2", True, 0, -4.0), ("e1", True, 1, -1.0), ("t", False, 0, 1.0)]
    )
    pairs = pd.concat([pairs, _pairs([("t", False, 1, 3.0)])], ignore_index=True)
    pooled = pooled_summary(pairs).set_index("comparison")
    free = pooled.loc["parameter-free picks vs their trainable counterfactuals"]
    assert free["seeds"] == 2 and free["mean_pp"] == pytest.approx(2.0)  # not (2 + 4 + 1) / 3
    assert pooled.loc["all picks vs their counterfactuals", "mean_pp"] == pytest.approx(
        ((2 + 4 - 1) / 3 - 1) / 2
    )
    summary = swap_summary(pairs)
    assert list(summary["swap"]) == ["e1", "e2", "t"]
    assert summary.loc[1, "seeds"] == 1 and "one seed" in summary.loc[1, "verdict"]
    raw = summary["t_p"].tolist()
    assert summary["p_holm"].tolist() == pytest.approx(holm(raw), nan_ok=True)


# --- the study file -----------------------------------------------------------------------------------


def _write(tmp_path: Path, **changes) -> Path:
    data = {
        "kind": "swap",
        "name": "t",
        "archs": [str(QUICK_ARCH)],
        "swaps": "all",
        "max_swaps": 1,
        "seeds": [0, 1],
        "retrain": {"recipe": "quick", "set": {"schedule.epochs": 1}},
    }
    data.update(changes)
    path = tmp_path / "swap.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _bad_found_json(tmp_path: Path) -> str:
    data = json.loads(QUICK_ARCH.read_text())
    data["space"]["kind"] = "hexagon_cell"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    return str(tmp_path / "bad.json")


def _all_pools(tmp_path: Path) -> str:
    path = tmp_path / "pools.json"
    save_architecture(homogeneous_architecture(load_space("cell_v1"), "max_pool_3x3"), path)
    return str(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"swap": "all"}, "unknown config key(s) swap"),
        ({"archs": ["nope/found.json"]}, "archs[0] 'nope/found.json': no such file"),
        ({"archs": ["nope/*.json"]}, "archs[0] 'nope/*.json' matches no file"),
        ({"archs": []}, "archs is empty"),
        ({"archs": "BAD"}, "unknown kind 'hexagon_cell'"),
        ({"archs": "POOLS", "swaps": "trainable"}, "no swap possible"),
        ({"swaps": "some"}, "swaps must be one of all, param_free, trainable"),
        ({"max_swaps": 0}, "max_swaps must be >= 1"),
        ({"seeds": [0, 0]}, "seeds must be a non-empty list of distinct integers"),
        ({"jobs": 0}, "jobs must be >= 1"),
        ({"retrain": {"recipe": "nope"}}, "unknown recipe 'nope'"),
        ({"retrain": {"recipe": "quick", "set": {"run.seed": 3}}}, "run.seed cannot be set in a study"),
        ({"retrain": {"recipe": "quick", "set": {"schedule.epochs": 0}}}, "schedule.epochs must be >= 1"),
        ({"archs": [str(ARCHS / "r50.json")]}, "fixed by the space's skeleton"),
    ],
)
def test_bad_swap_studies_one_line_exit_2(tmp_path, capsys, changes, message):
    if changes.get("archs") == "BAD":
        changes["archs"] = [_bad_found_json(tmp_path)]
    if changes.get("archs") == "POOLS":
        changes["archs"] = [_all_pools(tmp_path)]
    out = tmp_path / "out"
    assert main(["study", str(_write(tmp_path, **changes)), "--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("pflnas study: error: "), err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_dry_run_lists_runs_seed_by_seed_and_refuses_another_run(tmp_path, capsys):
    for run in ("runA", "runB"):  # globbed found.json files are named by their folder
        (tmp_path / "archs" / run).mkdir(parents=True)
        (tmp_path / "archs" / run / "found.json").write_text(QUICK_ARCH.read_text())
    path = _write(tmp_path, archs=["archs/*/found.json"], max_swaps=2, seeds=[3, 5])
    out = tmp_path / "out"
    assert main(["study", str(path), "--out", str(out), "--dry-run"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == 12 and not out.exists()
    assert lines[0] == "[1/12] runA-orig-s3: start" and lines[3] == "[4/12] runB-orig-s3: start"
    assert lines[6] == "[7/12] runA-orig-s5: start" and all(line.endswith(": start") for line in lines)

    held = out / "runs" / "runA-orig-s3"
    held.mkdir(parents=True)
    (held / "run.json").write_text(json.dumps({"run_id": "runA-orig-s3", "seed": 4}))
    assert main(["study", str(path), "--out", str(out), "--dry-run"]) == 2
    assert "holds another run" in capsys.readouterr().err
    assert main(["study", str(path), "--out", str(out), "--dry-run", "--overwrite"]) == 0
    assert "[1/12] runA-orig-s3: start (replaces another run)" in capsys.readouterr().out


def test_shipped_swap_study_files_are_valid(capsys):
    for name, runs in (("swap_quick", 12), ("swap_darts", None)):
        path = Path(__file__).parents[1] / "experiments" / "studies" / f"{name}.yaml"
        assert main(["study", str(path), "--out", "/nonexistent/never-written", "--dry-run"]) == 0
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
        assert runs is None or len(lines) == runs


# --- end to end ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("swap-data")
    make_tree(root / "tree", n_train=8, n_test=2)
    return str(make_archive(root / "tree", root / "tiny.tar.gz"))


@pytest.mark.slow
def test_tiny_swap_study_end_to_end(tmp_path, tiny_data, capsys, monkeypatch):
    monkeypatch.setenv("PFLNAS_CACHE", str(tmp_path / "cache"))
    tiny = {
        "schedule.epochs": 1,
        "data.subset": 64,
        "data.batch_size": 32,
        "data.eval_batch_size": 64,
        "model.init_channels": 4,
        "model.layers": 3,
        "model.auxiliary": False,
    }
    profile = {"batch_size": 2, "warmup": 1, "repeats": 2, "threads": 1}
    path = _write(tmp_path, retrain={"recipe": "quick", "set": tiny}, profile=profile, jobs=2)
    out = tmp_path / "study"
    assert main(["study", str(path), "--out", str(out), "--data-dir", tiny_data]) == 0, capsys.readouterr()
    run_ids = sorted(p.name for p in (out / "runs").iterdir())
    assert len(run_ids) == 4 and sum("-orig-" in r for r in run_ids) == 2
    results = {r: json.loads((out / "runs" / r / "retrain" / "result.json").read_text()) for r in run_ids}
    for r in run_ids:
        record = json.loads((out / "runs" / r / "run.json").read_text())
        assert record["seed"] == int(r[-1]) and (out / "runs" / r / "profile.json").is_file()
        assert results[r]["epochs"] == 1
    capsys.readouterr()
    assert main(["study", str(path), "--out", str(out), "--data-dir", tiny_data]) == 0
    assert capsys.readouterr().out.count("skip (complete)") == 4

    assert main(["report", str(out)]) == 0
    text = (out / "report" / "report.md").read_text()
    assert "## Paired differences per swap" in text and "95% CI" in text and "## Protocol" in text
    assert "cifar10_darts" in text  # the full-budget recipe it is compared with
    pairs = pd.read_csv(out / "report" / "tables" / "swap_pairs.csv")
    assert len(pairs) == 2 and sorted(pairs["seed"]) == [0, 1]
    for _, row in pairs.iterrows():  # counterfactual minus original, same seed, final epoch
        orig = next(r for r in run_ids if "-orig-" in r and r.endswith(f"s{row['seed']}"))
        swap = next(r for r in run_ids if "-orig-" not in r and r.endswith(f"s{row['seed']}"))
        assert row["delta_pp"] == pytest.approx(100 * (results[swap]["top1"] - results[orig]["top1"]))
    summary = pd.read_csv(out / "report" / "tables" / "swap_summary.csv")
    assert summary.loc[0, "seeds"] == 2 and summary.loc[0, "ci_low"] <= summary.loc[0, "mean_pp"]
    assert (out / "report" / "figures" / "paired_differences.png").is_file()
    assert "data:image/png;base64" in (out / "report" / "report.html").read_text()
