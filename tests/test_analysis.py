"""pflnas.analysis on fabricated run directories: loading, tidy frames, statistics, collapse, figures."""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _runs import BLOCKS, CELL, EPOCHS, NB201, make_probs, make_study, write_run

from pflnas import analysis as A
from pflnas.arch.derive import derive_architecture


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("study"))


@pytest.fixture(scope="module")
def runs(study, tmp_path_factory) -> list[A.RunData]:
    lone = tmp_path_factory.mktemp("lone")
    write_run(lone / "nb201", NB201, "darts", 1)
    write_run(lone / "blocks", BLOCKS, "darts", 2)
    with pytest.warns(A.IncompleteRunWarning, match="unfinished"):
        return A.load_runs(study, lone / "nb201", lone / "blocks")


# --- loading -------------------------------------------------------------------------------------------
def test_load_runs_reads_study_and_lone_runs(runs):
    by_id = {r.run_id: r for r in runs}
    assert len(runs) == 9
    assert by_id["cell_v1-random-s2"].strategy == "random" and by_id["cell_v1-random-s2"].setting == "s1"
    assert by_id["cell_v1-random-s2"].study.startswith("study")
    assert by_id["nb201"].setting == "default" and by_id["nb201"].kind == "nb201_cell"
    assert by_id["blocks"].alpha_mode == "individual" and by_id["blocks"].dataset == "cifar10"
    bad = by_id["unfinished"]
    assert not bad.complete and bad.arch is None and len(bad.metrics) == 1
    assert any("found.json" in i for i in bad.issues) and any("1 of 3" in i for i in bad.issues)
    assert all(r.complete for r in runs if r.run_id != "unfinished")


def test_load_runs_can_drop_incomplete_and_survives_a_torn_line(study, tmp_path):
    with pytest.warns(A.IncompleteRunWarning):
        assert len(A.load_runs(study, include_incomplete=False)) == 6
    run = write_run(tmp_path / "torn", CELL)
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"epoch": 3, "pro')
    with pytest.warns(A.IncompleteRunWarning, match="torn"):
        (loaded,) = A.load_runs(run)
    assert len(loaded.metrics) == EPOCHS and loaded.arch is not None and not loaded.complete
    with pytest.raises(FileNotFoundError):
        A.load_runs(tmp_path / "missing")


def test_a_folder_of_runs_and_shared_spaces(tmp_path):
    shared_blocks = BLOCKS.replace(alpha_mode="shared")
    write_run(tmp_path / "a", shared_blocks, seed=0)
    write_run(tmp_path / "b", CELL.replace(alpha_mode="shared"), seed=1)
    (tmp_path / "notes").mkdir()
    runs = A.load_runs(tmp_path)
    assert [r.run_id for r in runs] == ["a", "b"] and all(r.alpha_mode == "shared" for r in runs)
    df = A.choices_frame(runs)
    assert df["stage"].isna().all()
    blocks = df[df["run_id"] == "a"]
    assert sorted(blocks["group"]) == ["normal", "reduce"] and blocks["position"].isna().all()
    assert sorted(df[df["run_id"] == "b"]["group"].unique()) == ["normal", "reduce"]
    fig = A.draw_blocks(runs[0].arch)  # every block reads its type's shared choice
    assert len(fig.axes[0].patches) == len(shared_blocks.sites())
    with pytest.raises(ValueError, match="neither a run directory"):
        A.load_runs(tmp_path / "notes")


# --- frames --------------------------------------------------------------------------------------------
def test_choices_frame_shape_columns_and_strides(runs):
    df = A.choices_frame(runs)
    assert list(df.columns) == A.CHOICE_COLUMNS
    # cell_v1, 3 cells x 4 nodes x 2 kept edges, 6 runs; NB201 shared: 6 edges; 3 blocks
    assert len(df) == 6 * 3 * 8 + 6 + 3
    cell = df[df["space"] == "cell_v1"]
    assert set(cell["stage"].dropna()) == {0, 1, 2} and (cell["node"] == cell["position"]).all()
    reduce_in = cell[(cell["cell_type"] == "reduce") & (cell["source"] < 2)]
    assert (reduce_in["stride"] == 2).all()
    assert (cell[(cell["cell_type"] == "normal")]["stride"] == 1).all()
    nb = df[df["space"] == "nb201"]
    assert nb["stage"].isna().all() and (nb["is_zero"] == (nb["op"] == "none")).all()
    assert not nb[nb["is_zero"]]["param_free"].any()
    blocks = df[df["space"] == "resnet50_block"].sort_values("position")
    assert blocks["stage"].tolist() == [0, 1, 1] and blocks["stride"].tolist() == [1, 2, 1]
    assert blocks["source"].isna().all()
    assert ((df["prob"] > 0) & (df["prob"] <= 1)).all() and df["pf_mass"].between(0, 1 + 1e-9).all()


def test_param_free_flag_depends_on_stride(tmp_path):
    """DARTS skip_connect is parameter-free in a normal cell, a FactorizedReduce on a reduce cell's input."""
    probs = make_probs(CELL, np.random.default_rng(0), favour="skip_connect")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runs = A.load_runs(write_run(tmp_path / "skips", CELL, probs=probs))
    df = A.choices_frame(runs)
    assert (df["op"] == "skip_connect").all()
    assert df[df["stride"] == 2]["param_free"].eq(False).all() and len(df[df["stride"] == 2]) > 0
    assert df[df["stride"] == 1]["param_free"].all()
    strided = df[df["stride"] == 2].iloc[0]
    assert strided["pf_mass"] == pytest.approx(0.1 * 2 / 4)  # the two pools only, not the skip's 0.9
    assert runs[0].arch.param_free_share() == pytest.approx(df["param_free"].mean())


def test_trajectory_and_summary_frames(runs):
    traj = A.trajectory_frame(runs)
    assert list(traj.columns) == A.TRAJECTORY_COLUMNS
    one = traj[traj["run_id"] == "cell_v1-darts-s0"]
    assert len(one) == EPOCHS * 3 * 14 * 5 and set(one["epoch"]) == {0, 1, 2}
    assert len(traj[traj["run_id"] == "unfinished"]) == 3 * 14 * 5
    skip2 = one[(one["op"] == "skip_connect") & (one["stride"] == 2)]
    assert not skip2["param_free"].any() and len(skip2) > 0
    summary = A.summary_frame(runs)
    assert list(summary.columns) == A.SUMMARY_COLUMNS and len(summary) == len(runs)
    row = summary.set_index("run_id").loc["cell_v1-darts-s1"]
    assert row["epochs"] == EPOCHS and row["val_acc"] == pytest.approx(0.3) and row["wall_time_s"] == 7.5
    assert row["collapse_source"] == "computed" and 0 <= row["param_free_mass"] <= 1
    assert not summary.set_index("run_id").loc["unfinished", "complete"]


# --- statistics ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("k", "n", "low", "high"), [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0)]
)
def test_wilson_interval_known_values(k, n, low, high):
    assert A.wilson_interval(k, n) == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_empty_is_nan():
    assert all(math.isnan(v) for v in A.wilson_interval(0, 0))


def test_share_table_run_level_intervals_chance_and_pooled_view(runs):
    choices = A.choices_frame(runs)
    table = A.share_table(choices, ["space", "strategy"], n_boot=300, seed=3)
    assert list(table.columns) == ["space", "strategy", *A.SHARE_COLUMNS]
    cell = table[(table["space"] == "cell_v1")].set_index("strategy")
    for _, r in cell.iterrows():
        assert r["runs"] == 3 and r["ci_low"] <= r["share"] <= r["ci_high"]
        assert r["wilson_low"] <= r["pooled_share"] <= r["wilson_high"]
        assert math.isnan(r["boot_low"])  # 3 runs: no bootstrap over runs
        assert r["pf_mass_low"] <= r["pf_mass"] <= r["pf_mass_high"]
        # cell_v1 with 3 cells: cell0 normal (0.600), cell1 + cell2 reduce (about 0.472 each)
        assert r["chance"] == pytest.approx((8 * 0.6 + 2 * 8 * 0.47166666) / 24, abs=1e-6)
        assert r["excess"] == pytest.approx(r["share"] - r["chance"])
        assert r["p_holm"] >= r["p_chance"] or math.isnan(r["p_chance"])
    assert cell.loc["random", "share"] > cell.loc["darts", "share"]
    again = A.share_table(choices, ["space", "strategy"], n_boot=300, seed=3)
    pd.testing.assert_frame_equal(table, again)
    single = table[table["space"] == "nb201"].iloc[0]  # one run: no run-level interval
    assert single["runs"] == 1 and math.isnan(single["ci_low"]) and single["chance"] == pytest.approx(0.5)
    assert single["verdict"] == "1 run: cannot be told from chance"
    overall = A.share_table(choices, n_boot=100)
    assert len(overall) == 1 and overall["n"].iloc[0] == (~choices["is_zero"]).sum()


def test_bootstrap_over_runs_only_from_ten_runs():
    rng = np.random.default_rng(0)
    rows = [
        {"run_id": f"r{r}", "param_free": bool(rng.random() < 0.5), "is_zero": False, "pf_mass": 0.5}
        for r in range(12)
        for _ in range(10)
    ]
    df = pd.DataFrame(rows)
    ten = A.share_table(df[df["run_id"].isin([f"r{i}" for i in range(10)])], n_boot=200).iloc[0]
    nine = A.share_table(df[df["run_id"].isin([f"r{i}" for i in range(9)])], n_boot=200).iloc[0]
    assert ten["boot_low"] <= ten["share"] <= ten["boot_high"] and math.isnan(nine["boot_low"])
    assert math.isnan(ten["chance"]) and ten["verdict"] == "chance rate unknown"  # no run records


def _synthetic_choices(share_a: float, share_b: float, runs: int = 8, per_run: int = 20) -> pd.DataFrame:
    """Runs of strategy a/b; each run also holds normal and reduce choices (paired within runs)."""
    rng = np.random.default_rng(1)
    rows = []
    for level, share in (("a", share_a), ("b", share_b)):
        for r in range(runs):
            for i in range(per_run):
                ctype = "normal" if i % 2 else "reduce"
                p = share if ctype == "normal" else share / 3
                pf = bool(rng.random() < p)
                rows.append(
                    {"run_id": f"{level}{r}", "strategy": level, "cell_type": ctype, "param_free": pf}
                    | {"is_zero": False, "pf_mass": 0.5}
                )
    return pd.DataFrame(rows)


def test_compare_unpaired_direction_and_p_values():
    df = _synthetic_choices(0.9, 0.2)
    res = A.compare(df, "strategy", "a", "b")
    r = res.iloc[0]
    assert list(res.columns) == A.COMPARE_COLUMNS
    assert r["share_a"] > r["share_b"] and r["diff"] > 0 and r["excess_diff"] == pytest.approx(r["diff"])
    assert r["edge_p"] < 1e-6 and r["edge_test"] == "fisher" and r["test"] == "Welch t" and not r["paired"]
    assert r["p"] < 0.01 and r["p_holm"] == r["p"] and r["cliffs_delta"] == pytest.approx(1.0)
    assert r["diff_low"] > 0 and r["rank_test"] == "mannwhitneyu"
    assert r["min_rank_p"] == pytest.approx(2 / math.comb(16, 8))
    assert r["verdict"].startswith("a has a higher share than b")


def test_compare_paired_within_runs_and_by_groups():
    df = _synthetic_choices(0.9, 0.6)
    res = A.compare(df, "cell_type", "normal", "reduce", by=["strategy"])
    assert list(res["strategy"]) == ["a", "b"]
    for _, r in res.iterrows():
        assert r["paired"] and r["test"] == "paired t" and r["rank_test"] == "wilcoxon" and r["runs_a"] == 8
        assert r["share_a"] > r["share_b"] and r["p_holm"] < 0.05
    assert (res["p_holm"] >= res["p"]).all()


def test_compare_degenerate_cases_do_not_raise():
    df = _synthetic_choices(0.5, 0.5)
    empty = A.compare(df, "strategy", "a", "zzz").iloc[0]
    assert math.isnan(empty["edge_p"]) and "no choices" in empty["note"]
    assert empty["verdict"].startswith("cannot compare")
    same = df.assign(param_free=True)
    r = A.compare(same, "strategy", "a", "b").iloc[0]
    assert math.isnan(r["p"]) and "identical" in r["note"] and r["edge_p"] == 1.0
    assert r["verdict"].startswith("no detectable difference")
    assert A.compare(df.iloc[:0], "strategy", "a", "b").iloc[0]["n_a"] == 0


# --- collapse ------------------------------------------------------------------------------------------
def test_collapse_computed_from_probs_when_absent(tmp_path):
    skip = make_probs(CELL, np.random.default_rng(0), favour="skip_connect")
    conv = make_probs(CELL, np.random.default_rng(0), favour="conv_3x3", weight=0.6)
    live = {"collapse": {"flagged": True, "reasons": ["manual"]}, "skip_count": 0, "param_free_mass": 0.25}
    live["skip_count_by_type"] = {"normal": 0, "reduce": 0}  # a record counting parameter-free skips
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runs = A.load_runs(
            write_run(tmp_path / "skip", CELL, seed=0, probs=skip),
            write_run(tmp_path / "conv", CELL, "random", seed=1, probs=conv),
            write_run(tmp_path / "live", CELL, "random", seed=2, probs=conv, live=live),
        )
    s = A.summary_frame(runs).set_index("run_id")
    assert s.loc["skip", "collapse_flagged"] and s.loc["skip", "collapse_source"] == "computed"
    assert any(r.startswith("skip_count: normal cell0") for r in s.loc["skip", "collapse_reasons"])
    assert not any("cell1" in r or "cell2" in r for r in s.loc["skip", "collapse_reasons"])  # reduce cells
    assert any(r.startswith("skip_mass") for r in s.loc["skip", "collapse_reasons"])
    # cell0 normal: 8 skips; reduce cells: only the edges from intermediate nodes (stride 1) are identities
    arch = runs[0].arch
    reduce_free = sum(e.source >= 2 for c in arch.cells if c.type == "reduce" for e in c.edges)
    assert s.loc["skip", "skip_count_normal"] == 8 and s.loc["skip", "skip_count_reduce"] == reduce_free
    assert s.loc["skip", "skip_count"] == 8 + reduce_free < 24
    assert not s.loc["conv", "collapse_flagged"] and s.loc["conv", "collapse_reasons"] == []
    assert s.loc["live", "collapse_source"] == "live" and s.loc["live", "collapse_reasons"] == ["manual"]
    assert s.loc["live", "param_free_mass"] == 0.25
    table = A.collapse_summary(s.reset_index())
    assert table.set_index("strategy").loc["darts", "share"] == 1.0
    assert table.set_index("strategy").loc["random", "flagged"] == 1


def test_collapse_flags_is_pure_and_thresholds_apply():
    probs = make_probs(CELL, np.random.default_rng(0), favour="skip_connect", weight=0.5)
    arch = derive_architecture(CELL, probs)
    assert A.collapse_flags(probs, arch)  # every edge keeps skip
    loose = A.CollapseThresholds(max_skip_per_cell=8, max_skip_mass=0.95)
    assert A.collapse_flags(probs, arch, loose) == []
    sharp = {label: {op: float(op == "conv_3x3") for op in d} for label, d in probs.items()}
    assert any(r.startswith("low_entropy") for r in A.collapse_flags(sharp, None))
    diag = A.collapse_diagnostics(probs, arch)
    assert set(diag) == {"edge_entropy", "param_free_mass", "skip_count", "skip_count_by_type", "collapse"}
    assert diag["collapse"]["flagged"] and diag["skip_count_by_type"]["normal"] == 8
    assert diag["skip_count"] == sum(diag["skip_count_by_type"].values()) < 24  # stride-2 skips have weights
    json.dumps(diag)  # a metrics.jsonl record


def test_block_space_collapse_uses_skip_share():
    probs = make_probs(BLOCKS, np.random.default_rng(0), favour="identity", weight=0.4)
    arch = derive_architecture(BLOCKS, probs)
    assert A.skip_count(arch) == 2  # identity only exists at stride 1
    assert any(r.startswith("skip_share") for r in A.collapse_flags(probs, arch))


# --- figures -------------------------------------------------------------------------------------------
def test_every_plot_returns_a_figure_and_saves_png_and_svg(runs, tmp_path):
    from matplotlib.figure import Figure

    by_id = {r.run_id: r for r in runs}
    choices = A.choices_frame(runs)
    cell_choices = choices[choices["space"] == "cell_v1"]
    shares = A.share_table(cell_choices, ["cell_type", "strategy"], n_boot=50)
    traj = A.trajectory_frame([by_id["cell_v1-darts-s0"]])
    retrained = pd.DataFrame(
        {
            "name": ["r50", "r50-max", "hybrid"],
            "top1": [0.76, 0.74, 0.755],
            "latency_ms": [10.0, 7.0, 11.0],
            "params": [25.6e6, 19e6, 22e6],
        }
    )
    arch = by_id["cell_v1-darts-s0"].arch
    figures = {
        "share": A.plot_share_bars(shares, "cell_type", "strategy"),
        "freq": A.plot_op_frequency(cell_choices, by="cell_type"),
        "traj": A.plot_trajectories(traj, "cell_v1-darts-s0", max_panels=3),
        "heat": A.plot_probability_heatmap(arch, max_rows=20),
        "heat_dict": A.plot_probability_heatmap(by_id["nb201"].arch.probabilities),
        "cell": A.draw_cell(arch.cells[1], arch.space),
        "nb201": A.draw_architecture(by_id["nb201"].arch),
        "cells": A.draw_architecture(arch, max_cells=2),
        "blocks": A.draw_blocks(by_id["blocks"].arch),
        "pareto": A.plot_pareto(retrained, "latency_ms", "top1", label="name"),
        "acc_lat": A.plot_accuracy_vs_latency(retrained),
    }
    saved = ("cell", "freq", "blocks", "acc_lat")
    for name, fig in figures.items():
        assert isinstance(fig, Figure), name
        if name not in saved:  # drawing errors surface only when rendering
            fig.savefig(io.BytesIO(), format="png", dpi=30)
    written = A.save_figure(figures["cell"], tmp_path / "figs" / "cell")
    assert [p.name for p in written] == ["cell.png", "cell.svg"]
    assert all(p.stat().st_size > 0 for p in written)
    assert written[0].read_bytes()[:4] == b"\x89PNG" and b"<svg" in written[1].read_bytes()[:2000]
    assert not [p for p in (tmp_path / "figs").iterdir() if p.name.startswith(".")]  # no temp files left
    for name in saved[1:]:
        assert len(A.save_figure(figures[name], tmp_path / "figs" / f"{name}.png")) == 2


def test_pareto_mask():
    df = pd.DataFrame({"lat": [1.0, 2.0, 3.0, 2.5, np.nan], "acc": [0.5, 0.7, 0.8, 0.6, 0.9]})
    assert A.pareto_mask(df, "lat", "acc").tolist() == [True, True, True, False, False]
