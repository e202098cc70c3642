"""benchmarks/seed_batch.py at tiny sizes: the JSON rows (grouped and sequential per N, positive times), the
table, and bad arguments as one line with exit code 2. Timings are the benchmark's, not asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "seed_batch.py"
TINY = ["--batch-size", "2", "--init-channels", "4", "--layers", "3", "--repeats", "1", "--warmup", "0"]
FIELDS = {"kind", "seeds", "step_s", "step_s_min", "peak_mb", "aten_ops", "threads", "load_before", "device"}


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.slow
def test_tiny_run_writes_rows(tmp_path):
    out = tmp_path / "rows.json"
    done = _run("--seeds", "1,2", "--device", "cpu", "--threads", "1", *TINY, "--json", str(out))
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert sorted((r["kind"], r["seeds"]) for r in rows) == [
        ("grouped", 1), ("grouped", 2), ("sequential", 1), ("sequential", 2)
    ]  # fmt: skip
    assert [r["seeds"] for r in rows] == [1, 1, 2, 2]  # alternating, each N's pair together
    for row in rows:
        assert row.keys() >= FIELDS
        assert row["step_s"] > 0 and row["step_s_min"] > 0 and row["aten_ops"] > 0
        assert row["threads"] == 1 and row["device"] == "cpu"
    seq = {r["seeds"]: r["aten_ops"] for r in rows if r["kind"] == "sequential"}
    assert seq[2] > seq[1]  # two separate supernets stepped in turn: more launches than one
    assert data["settings"]["layers"] == 3 and len(data["settings"]["load_before"]) == 3
    assert "load average" in done.stdout and "g/seq" in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "1,x"], "not a comma-separated list"),
        (["--seeds", "0"], "at least 1"),
        (["--seeds", "2,2"], "repeats a seed count"),
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--device", "tpu"], "invalid choice"),
        (["--seeds", "1", "--device", "cpu", "--layers", "2"], "needs layers >= 3"),  # the worker's refusal
    ],
)
def test_bad_arguments_fail_in_one_line(args, message):
    done = _run(*args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
    assert done.stdout == ""
