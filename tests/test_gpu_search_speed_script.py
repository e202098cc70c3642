"""benchmarks/gpu_search_speed.sh, the prepared GPU search-speed check, in its CPU smoke mode (--dry-run):
every stage runs with tiny settings and the rows it writes have the fields the GPU run reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _tiny_runs import tiny_archive

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "gpu_search_speed.sh"
STEP_STAGES = {
    "darts_per_edge_eager_graphed",
    "darts_per_source_eager_graphed",
    "darts_batched_eager_graphed",
    "darts2_batched_graphed",
    "darts_batched_bf16_channels_last_graphed",
}
ALL_STAGES = [
    *sorted(STEP_STAGES),
    "search_batched_3_epochs",
    "seeds_grouped_graphed",
    "darts_batched_graphed_compiled",
]


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {
        **os.environ,
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        "PFLNAS_CACHE": str(tmp_path / "cache"),
        "TMPDIR": str(tmp_path),
        **env,
    }
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=environ, timeout=900
    )


@pytest.mark.slow
def test_smoke_mode_writes_every_row(tmp_path):
    out = tmp_path / "out"
    data = tiny_archive(tmp_path / "data")
    # the compile stage is left out here (inductor on 2 shared cores takes minutes); run it by hand
    done = _run(tmp_path, "--dry-run", str(out), PFLNAS_DATA=data, COMPILE_STAGES="")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "log.txt", "rows.json", "search_metrics.jsonl", "seed_batch.json"
    ]  # fmt: skip
    seeds = json.loads((out / "seed_batch.json").read_text())["rows"]
    assert sorted((r["kind"], r["seeds"]) for r in seeds) == [
        ("grouped", 1), ("grouped", 2), ("sequential", 1), ("sequential", 2)
    ]  # fmt: skip
    result = json.loads((out / "rows.json").read_text())
    assert result["smoke"] is True and result["failed"] == []
    rows = result["rows"]
    assert {r["stage"] for r in rows} == STEP_STAGES
    by_stage = {r["stage"]: r for r in rows}
    assert [r["layout"] for r in rows if r["stage"].endswith("_eager_graphed")] == [
        "batched",
        "per_edge",
        "per_source",
    ]  # sorted by stage name
    for row in rows:
        assert row["step_s"] > 0 and row["peak_mb"] == row["peak_mb"] and row["aten_ops"] > 0
        assert row["cuda_graph"] is False and row["device"] == "cpu"  # no graphs without CUDA
    assert by_stage["darts2_batched_graphed"]["strategy"] == "darts2"
    bf16 = by_stage["darts_batched_bf16_channels_last_graphed"]
    assert bf16["amp"] is True and bf16["channels_last"] is True and bf16["layout"] == "batched"
    ratio = result["summary"]["darts2_vs_darts_batched"]
    assert ratio["ratio"] == pytest.approx(
        by_stage["darts2_batched_graphed"]["step_s"] / by_stage["darts_batched_eager_graphed"]["step_s"]
    )
    search = result["summary"]["search_batched"]
    times = search["epoch_times_s"]
    assert len(times) == 3 and all(t > 0 for t in times)
    assert search["projected_50_epochs_s"] == pytest.approx(times[0] + 49 * (times[1] + times[2]) / 2)
    assert len((out / "search_metrics.jsonl").read_text().splitlines()) == 3
    assert "projected 50 epochs" in done.stdout and "darts2 / darts (batched)" in done.stdout


def test_stages_past_the_budget_are_skipped_in_one_line_each(tmp_path):
    out = tmp_path / "out"
    done = _run(tmp_path, "--dry-run", str(out), BUDGET_S="0", PFLNAS_DATA=str(tmp_path / "none"))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((out / "rows.json").read_text())
    assert result["rows"] == [] and result["summary"] == {}
    skipped = [line.split(":")[0] for line in result["failed"]]
    assert sorted(skipped) == sorted(ALL_STAGES) and all("skipped" in line for line in result["failed"])
    # each one line as it happens, repeated once in the closing summary
    assert all(done.stdout.count(f"{stage}: skipped") == 2 for stage in ALL_STAGES)


def test_unknown_option_is_one_line_and_exit_code_2(tmp_path):
    done = _run(tmp_path, "--bogus")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "--bogus" in done.stderr


def test_gpu_mode_without_data_or_gpu_is_one_line_and_exit_code_2(tmp_path):
    environ = {k: v for k, v in os.environ.items() if k != "PFLNAS_DATA"}
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "a")], capture_output=True, text=True, env=environ
    )
    assert done.returncode == 2 and done.stderr.strip() == (
        "gpu_search_speed.sh: set PFLNAS_DATA to the CIFAR-10 archive or folder"
    )
    if not torch.cuda.is_available():
        done = _run(tmp_path, str(tmp_path / "b"), PFLNAS_DATA=str(tmp_path))
        assert done.returncode == 2 and done.stderr.strip().splitlines() == [
            "gpu_search_speed.sh: no CUDA device visible (on a CPU: --dry-run)"
        ]
