"""Chance rates by enumeration, run-level inference, and a report of random runs that must read "chance"."""

from __future__ import annotations

import itertools
import math
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from _runs import CELL, make_probs, write_run

from pflnas import analysis as A
from pflnas.analysis.report import write_report
from pflnas.arch.derive import derive_architecture
from pflnas.ops import PARAM_FREE, get_op
from pflnas.spaces import list_spaces, load_space
from pflnas.spaces.labels import edge_label


def _darts_cell_by_enumeration(space, cell_type: str) -> Fraction:
    """Every choice of kept input pairs and of ops of one DARTS cell, counted one by one."""
    ops = [op for op in space.ops if not get_op(op).is_zero]
    total, count = Fraction(0), 0
    pairs = [list(itertools.combinations(range(node), 2)) for node in space.node_ids()]
    for kept in itertools.product(*pairs):
        edges = [(n, s) for n, pair in zip(space.node_ids(), kept) for s in pair]
        for chosen in itertools.product(ops, repeat=len(edges)):
            free = sum(
                get_op(op).role(space.edge_stride(cell_type, s)) == PARAM_FREE
                for (_, s), op in zip(edges, chosen)
            )
            total += Fraction(free, len(edges))
            count += 1
    return total / count


def test_cell_v1_chance_by_enumeration():
    space = load_space("cell_v1").replace(nodes=3)  # 3 nodes keeps the enumeration small (5^6 x 18)
    for cell_type in ("normal", "reduce"):
        want = _darts_cell_by_enumeration(space, cell_type)
        assert A.chance_share(space, where={"cell_type": cell_type}) == pytest.approx(float(want), abs=1e-12)
    full = load_space("cell_v1")
    assert A.chance_share(full, where={"cell_type": "normal"}) == pytest.approx(0.600, abs=1e-12)
    assert round(A.chance_share(full, where={"cell_type": "reduce"}), 4) == 0.4717
    # by hand: node 2 keeps both stride-2 inputs (0.4 each); node n keeps 2 of n sources uniformly
    by_hand = (0.8 + 2 / 3 * (0.4 + 0.4 + 0.6) + 2 / 4 * (0.8 + 1.2) + 2 / 5 * (0.8 + 1.8)) / 8
    assert A.chance_share(full, where={"cell_type": "reduce"}) == pytest.approx(by_hand, abs=1e-12)


@pytest.mark.parametrize("name", list_spaces())
@pytest.mark.parametrize("mode", ["individual", "shared"])
def test_chance_matches_the_real_derivation_of_random_weights(name, mode):
    """Feed uniformly random weights through the real derivation: the mean share must match chance."""
    space = load_space(name).replace(alpha_mode=mode)
    if space.kind == "darts_cell":
        space = space.replace(layers=5)
    rng = np.random.default_rng(0)
    labels = [(g, f"{g}.{k}") for g, _ in space.alpha_groups() for k in space.choice_keys()]
    shares = []
    for _ in range(1500):
        probs = {
            label: dict(zip(space.group_ops(g), rng.random(len(space.group_ops(g))))) for g, label in labels
        }
        scale = {label: rng.random() for _, label in labels} if space.kind == "darts_cell" else None
        share = derive_architecture(space, probs, edge_scale=scale).param_free_share()
        if not math.isnan(share):
            shares.append(share)
    se = np.std(shares) / math.sqrt(len(shares))
    assert abs(np.mean(shares) - A.chance_share(space, "pcdarts")) < 4 * se + 1e-9
    assert A.chance_share(space, "pcdarts") == A.chance_share(space, "darts")


def test_nb201_and_block_chance_rates():
    assert A.chance_share(load_space("nb201")) == 0.5
    blocks = load_space("resnet50_block")
    assert A.chance_share(blocks, where={"stride": 1}) == pytest.approx(3 / 5)  # conv, dw | max, avg, id
    assert A.chance_share(blocks, where={"stride": 2}) == pytest.approx(2 / 5)  # identity cannot stride
    assert A.derivation_rule(blocks).name == "one_op_per_block"
    dist = A.share_distribution(load_space("nb201"), where={"node": 3})
    assert sum(dist.values()) == 1 and max(n for _, n in dist) == 3


def test_rank_floor_and_holm():
    assert A.min_p_rank(3, 3) == pytest.approx(0.1) and A.min_p_rank(3) == pytest.approx(0.25)
    assert A.holm([0.01, math.nan, 0.04, 0.03]) == pytest.approx([0.03, math.nan, 0.06, 0.06], nan_ok=True)


def _choices(per_run_p: np.ndarray, edges: int, rng: np.random.Generator) -> pd.DataFrame:
    k = rng.binomial(edges, np.clip(per_run_p, 0, 1))
    rows = [
        {"run_id": f"r{r}", "param_free": i < k[r], "is_zero": False, "pf_mass": 0.5}
        for r in range(len(per_run_p))
        for i in range(edges)
    ]
    return pd.DataFrame(rows)


def test_headline_interval_covers_the_truth_with_between_run_variation():
    """10 runs x 40 edges, p = 0.4, between-run SD 0.1: the run-level 95% interval must cover 0.4 in at
    least 92% of 500 repetitions (the old bootstrap over runs covered about 88%)."""
    rng = np.random.default_rng(2026)
    covered = 0
    for _ in range(500):
        table = A.share_table(_choices(rng.normal(0.4, 0.1, 10), 40, rng), n_boot=10).iloc[0]
        covered += table["ci_low"] <= 0.4 <= table["ci_high"]
    assert covered / 500 >= 0.92


def test_three_against_three_runs_with_complete_separation_is_a_power_limit():
    """Cliff's delta 1 with 3 vs 3 runs: the verdict names the limit instead of claiming inconsistency."""
    rng = np.random.default_rng(0)
    a = _choices(np.array([0.8, 0.85, 0.9]), 40, rng).assign(strategy="a")
    b = _choices(np.array([0.2, 0.25, 0.3]), 40, rng).assign(strategy="b", run_id=lambda d: "b" + d["run_id"])
    r = A.compare(pd.concat([a, b]), "strategy", "a", "b").iloc[0]
    assert r["cliffs_delta"] == 1.0 and r["min_rank_p"] == pytest.approx(0.1)
    assert "not consistently" not in r["verdict"]
    assert (
        r["verdict"].startswith("a has a higher share") or "rank tests cannot reach p < 0.1" in r["verdict"]
    )


def _random_study(tmp_path, favour: str | None = None, runs: int = 10):
    for seed in range(runs):
        probs = make_probs(CELL, np.random.default_rng(seed), favour=favour, weight=0.6) if favour else None
        write_run(tmp_path / "study" / "runs" / f"r{seed}", CELL, seed=seed, probs=probs)
    return tmp_path / "study"


def test_report_of_random_runs_says_consistent_with_chance(tmp_path):
    study = _random_study(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runs = A.load_runs(study)
    table = A.share_table(A.choices_frame(runs), by=["cell_type"])
    assert table["verdict"].str.startswith("consistent with chance").all()
    assert table.set_index("cell_type").loc["normal", "chance"] == pytest.approx(0.6)
    report = write_report([study], tmp_path / "report")
    text = report.markdown_path.read_text()
    headline = text.split("## Parameter-free share")[1].split("### What these runs cannot show")[0]
    assert "consistent with chance" in headline and "above chance" not in headline
    assert "below chance" not in headline and "| chance |" in headline
    assert "p_holm" in text and "detected with 80% power" in text and "## Protocol" in text
    csv = pd.read_csv(tmp_path / "report" / "tables" / "share_by_cell_type.csv")
    assert {"chance", "p_holm", "ci_low", "wilson_low"} <= set(csv.columns)


def test_report_of_skip_favouring_runs_is_above_chance_in_normal_cells(tmp_path):
    study = _random_study(tmp_path, favour="skip_connect")
    table = A.share_table(A.choices_frame(A.load_runs(study)), by=["cell_type"]).set_index("cell_type")
    assert table.loc["normal", "verdict"].startswith("above chance") and table.loc["normal", "share"] == 1.0
    # in reduction cells the stride-2 skips are FactorizedReduce: the share there is below chance
    assert table.loc["reduce", "verdict"].startswith("below chance")


def test_collapse_caps_normal_cells_only_and_ignores_strided_skips():
    probs = make_probs(CELL, np.random.default_rng(0), favour="max_pool_3x3", weight=0.5)
    for node in range(3, 6):  # every stride-1 edge of reduction cell1 keeps a skip (3 of them kept)
        for src in range(2, node):
            probs[edge_label("cell1", node, src)] = {
                op: 0.9 if op == "skip_connect" else 0.025 for op in CELL.ops
            }
    arch = derive_architecture(CELL, probs)
    assert A.skip_counts(arch)["reduce"] >= 3 and A.skip_counts(arch)["normal"] == 0
    assert not any(r.startswith("skip_count") for r in A.collapse_flags(probs, arch))
    assert not A.is_skip("skip_connect", 2) and A.is_skip("skip_connect", 1) and A.is_skip("identity", 1)
