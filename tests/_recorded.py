"""Outputs of tiny CPU runs of search, study, report, retrain, bench and profile, as plain data.

``tests/data/recorded_outputs.json`` holds what these commands gave when recorded; test_recorded_outputs.py
runs them again and compares, so a refactor that changes what a command computes fails. Re-record only when
a change of results is intended: ``python tests/_recorded.py`` from the repository root (needs the 'bench'
extra for NAS-Bench-201).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))

from _tiny_runs import SEARCH_SETS, retrain_argv, search_argv, tiny_archive  # noqa: E402

RECORD = Path(__file__).parent / "data" / "recorded_outputs.json"
ARCHS = Path(__file__).parent.parent / "experiments" / "archs"
STRATEGIES = ("darts", "darts2", "pcdarts", "gdas", "spos")
SEARCH_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "arch_loss", "param_free_share")
RETRAIN_KEYS = ("epoch", "train_loss", "train_acc", "top1", "top5", "loss")


def cli(argv: list[str]) -> str:
    """``pflnas ARGV`` in this process; its stdout (raises if it exits non-zero)."""
    from pflnas.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    if code != 0:
        raise RuntimeError(f"pflnas {' '.join(argv)} exited with {code}")
    return out.getvalue()


def metrics(path: Path, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: r[k] for k in keys if k in r} for r in rows if "epoch" in r]


def found(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    return {k: data[k] for k in ("cells", "blocks", "probabilities", "param_free_share") if k in data}


def record_search(source: str, root: Path) -> dict[str, Any]:
    out = {}
    for strategy in STRATEGIES:
        run = root / f"search-{strategy}"
        cli(search_argv(source, run, 2, f"strategy.name={strategy}", "run.seed=3"))
        out[strategy] = {
            "found": found(run / "found.json"),
            "metrics": metrics(run / "metrics.jsonl", SEARCH_KEYS),
        }
    return out


def record_study(source: str, root: Path) -> dict[str, Any]:
    """A 2 alpha modes x 2 seeds study of tiny searches, and the share table its report writes."""
    study = root / "study.yaml"
    sets = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in SEARCH_SETS)}
    sets = {k: v for k, v in sets.items() if k not in ("run.device", "run.threads")}
    sets["run.epochs"] = 1
    body = {
        "name": "tiny",
        "search": {"set": sets},
        "grid": {
            "spaces": ["cell_v1"],
            "strategies": ["darts"],
            "seeds": [0, 1],
            "settings": {
                "individual": {"space.alpha_mode": "individual"},
                "shared": {"space.alpha_mode": "shared"},
            },
        },
        "jobs": 1,
        # one search per seed, as recorded: a seed group's float32 sums differ in the last digits
        # (tests/test_study_batch_seeds.py compares grouped studies with these searches)
        "batch_seeds": 1,
    }
    study.write_text(json.dumps(body))
    out = root / "study"
    cli(["study", str(study), "--out", str(out), "--data-dir", source, "--device", "cpu"])
    runs = sorted(p.parent for p in out.rglob("found.json"))
    report = root / "report"
    cli(["report", str(out), "--out", str(report)])
    tables = {}
    for name in ("share_by_cell_type", "share_overall", "comparisons"):
        with (report / "tables" / f"{name}.csv").open() as f:
            tables[name] = list(csv.DictReader(f))
    return {"found": {p.relative_to(out).as_posix(): found(p / "found.json") for p in runs}, "report": tables}


def record_retrain(source: str, root: Path) -> dict[str, Any]:
    run = root / "retrain"
    cli(retrain_argv(source, run, 2, "run.seed=5"))
    result = json.loads((run / "result.json").read_text())
    return {"top1": result["top1"], "metrics": metrics(run / "metrics.jsonl", RETRAIN_KEYS)}


def record_bench(root: Path) -> dict[str, Any]:
    argv = ["bench", "nb201", "--strategy", "evolution,random", "--selection", "oracle", "--seeds", "2"]
    data = json.loads(cli([*argv, "--queries", "20", "--out", str(root / "bench"), "--json"]))
    keep = ("seed", "cell", "accuracy", "regret", "param_free_share", "found_at_query", "curve")
    return {
        s["strategy"]: [{k: run[k] for k in keep if k in run} for run in s["runs"]]
        for s in data["strategies"]
    }


def record_profile() -> dict[str, Any]:
    archs = [str(ARCHS / f"{name}.json") for name in ("r50", "r50_max", "darts_v2")]
    data = json.loads(cli(["profile", "--arch", *archs, "--no-speed", "--json"]))
    keep = ("space", "network", "input_shape", "params", "macs")
    return {Path(r["arch"]).name: {k: r[k] for k in keep if k in r} for r in data["results"]}


def record_all() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = tiny_archive(root / "data")
        return {
            "search": record_search(source, root),
            "study": record_study(source, root),
            "retrain": record_retrain(source, root),
            "bench": record_bench(root),
            "profile": record_profile(),
        }


if __name__ == "__main__":
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(record_all(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD}")
