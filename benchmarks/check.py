"""One table of what a search framework is judged by, measured in one run on one device (issue 7):

1. DARTS first- and second-order search-step time and peak memory on cell_v1 (C=16, 8 cells, batch 64),
   pflnas vs NNI 3.0's DARTS on the same space through the NNI bridge (when the NNI extra is importable by
   ``--nni-python``), plus pflnas with ``torch.compile`` on CUDA;
2. the projected time of the full DARTS-protocol cell_v1 search (50 epochs, CIFAR-10, 390 steps an epoch):
   on CUDA from a real ``pflnas search`` of ``--search-epochs`` epochs (steady epochs, evaluation included);
   on CPU from the measured step time;
3. retraining images/s of R50-hybrid, pflnas retrain vs a timm train.py-style loop, on a synthetic
   ImageNet-style JPEG tree (both decode JPEGs in worker processes);
4. ``pflnas profile`` of R50 / R50-max / R50-hybrid (params, MACs, batch-1 latency, throughput).

    python benchmarks/check.py [--device cpu|cuda] [--out DIR] [--nni-python .venv-nni/bin/python]
        [--search-epochs 2] [--quick]

Prints one table (ratios against the baseline of each row measured in the same run) and writes it as
``DIR/check.json``. Installs nothing and needs no network; CIFAR-10 comes from ``$PFLNAS_DATA``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
STEPS_PER_EPOCH = 390  # DARTS protocol: 25,000 training images at batch 64
FULL_EPOCHS = 50


def _run(cmd: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run ``cmd``, its output kept in ``log``; raises with the log's tail on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    print(f"  [{time.perf_counter() - t0:6.1f} s] {' '.join(Path(c).name for c in cmd[1:4])} ...", flush=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"exit {proc.returncode}: {' | '.join(tail)}")
    return proc.stdout


def _row(section: str, item: str, unit: str, value: float | None, base: float | None, base_name: str) -> dict:
    ratio = value / base if value is not None and base else None
    return {
        "section": section,
        "item": item,
        "unit": unit,
        "pflnas": value,
        "baseline": base,
        "baseline_name": base_name,
        "ratio": ratio,
    }


def search_steps(args: argparse.Namespace, out: Path, rows: list[dict], notes: list[str]) -> dict[str, Any]:
    fast = ["--amp", "--channels-last"] if args.device == "cuda" else []
    reps = ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    cmd = [
        sys.executable,
        str(BENCH / "search_step.py"),
        "--device",
        args.device,
        *args.step_shape,
        "--configs",
        "darts:1,darts2:1",
    ]
    _run([*cmd, *reps, *fast, "--json", str(out / "step.json")], out / "step.log", 1800)
    steps = {r["strategy"]: r for r in json.loads((out / "step.json").read_text())["rows"]}
    nni: dict[str, dict] = {}
    if args.nni_python and (BENCH / "nni_darts.py").exists():
        try:
            _run(
                [
                    args.nni_python,
                    str(BENCH / "nni_darts.py"),
                    "--device",
                    args.device,
                    *reps,
                    "--json",
                    str(out / "nni.json"),
                ],
                out / "nni.log",
                3600,
            )
            for r in json.loads((out / "nni.json").read_text())["rows"]:
                if r.get("impl") == "nni" and r.get("step_s") is not None:
                    nni.setdefault(r.get("strategy", "darts"), r)  # first NNI layout (its Cell); 1st order
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            notes.append(f"NNI benchmark failed: {exc}")
    else:
        notes.append("NNI: not measured (pass --nni-python with an interpreter that has the nni extra)")
    for name, label in (("darts", "DARTS 1st order"), ("darts2", "DARTS 2nd order")):
        mine, theirs = steps[name], nni.get(name, {})
        rows.append(
            _row("search step", f"{label} step", "s", mine["step_s"], theirs.get("step_s"), "NNI 3.0")
        )
        rows.append(
            _row(
                "search step", f"{label} peak memory", "MB", mine["peak_mb"], theirs.get("peak_mb"), "NNI 3.0"
            )
        )
    return steps


def compiled(args: argparse.Namespace, out: Path, steps: dict, rows: list[dict], notes: list[str]) -> None:
    """DARTS first order with the supernet forward under torch.compile (CUDA; last, as compiling is slow)."""
    cmd = [
        sys.executable,
        str(BENCH / "search_step.py"),
        "--device",
        args.device,
        *args.step_shape,
        "--configs",
        "darts:1",
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
        "--amp",
        "--channels-last",
        "--compile",
        "--json",
        str(out / "step_compile.json"),
    ]
    try:
        _run(cmd, out / "step_compile.log", args.compile_timeout)
        comp = json.loads((out / "step_compile.json").read_text())["rows"][0]
        rows.append(
            _row(
                "search step",
                "DARTS 1st order, torch.compile",
                "s",
                comp["step_s"],
                steps["darts"]["step_s"],
                "pflnas eager",
            )
        )
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        notes.append(f"torch.compile of the supernet: no result ({str(exc)[:300]})")


def projection(args: argparse.Namespace, out: Path, steps: dict, rows: list[dict], notes: list[str]) -> None:
    per_step = steps["darts"]["step_s"]
    from_steps = per_step * STEPS_PER_EPOCH * FULL_EPOCHS / 60
    if args.search_epochs and args.device == "cuda":
        run = out / "search"
        _run(
            [
                sys.executable,
                "-m",
                "pflnas",
                "search",
                "--space",
                "cell_v1",
                "--device",
                "cuda",
                "--amp",
                "--channels-last",
                "--epochs",
                str(args.search_epochs),
                "--set",
                "run.progress=false",
                "--out",
                str(run),
                "--overwrite",
            ],
            out / "search.log",
            1800,
        )
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        times = [m["epoch_time"] for m in metrics]
        steady = times[1:] or times
        per_epoch = sum(steady) / len(steady)
        minutes = per_epoch * FULL_EPOCHS / 60
        notes.append(
            f"full-search projection from a real {len(times)}-epoch cell_v1 search: epoch times {times} s "
            f"(first includes cuDNN autotuning), val acc {metrics[-1]['val_acc']:.3f}"
        )
        rows.append(
            _row(
                "full search",
                "cell_v1 DARTS 50 epochs (measured epochs)",
                "min",
                minutes,
                15.0,
                "15-min target",
            )
        )
    rows.append(_row("full search", "cell_v1 DARTS 50 epochs (from step time)", "min", from_steps, None, ""))


def retrain(args: argparse.Namespace, out: Path, rows: list[dict], notes: list[str]) -> None:
    tree = out / "fake-imagenet"
    n_train = max(args.retrain_batch * (args.retrain_steps + 4) // 10 + 1, 8)
    if not (tree / "train").exists():
        _run(
            [
                sys.executable,
                str(BENCH / "fake_imagefolder.py"),
                str(tree),
                "--classes",
                "10",
                "--train",
                str(n_train),
                "--val",
                "2",
            ],
            out / "fake.log",
            900,
        )
    cuda = args.device == "cuda"
    _run(
        [
            sys.executable,
            str(BENCH / "retrain_throughput.py"),
            "--device",
            args.device,
            "--dataset",
            "imagenet",
            "--arch",
            str(ROOT / "experiments/archs/r50_hybrid.json"),
            "--data-dir",
            str(tree),
            "--batch-size",
            str(args.retrain_batch),
            "--steps",
            str(args.retrain_steps),
            "--warmup",
            "3",
            "--amp",
            "bf16" if cuda else "none",
            "--workers",
            str(args.workers),
            "--json",
            str(out / "retrain.json"),
            "--image-size",
            str(args.image_size),
        ]
        + ["--channels-last"] * cuda,
        out / "retrain.log",
        1800,
    )
    res = {r["loop"]: r["images_per_s"] for r in json.loads((out / "retrain.json").read_text())["rows"]}
    rows.append(
        _row(
            "retrain",
            f"R50-hybrid {args.image_size}px batch {args.retrain_batch}",
            "images/s",
            res["pflnas retrain"],
            res["timm train.py-style loop"],
            "timm-style loop",
        )
    )
    if cuda:
        notes.append("retrain: bf16 autocast and channels_last in both loops")


def profile(args: argparse.Namespace, out: Path, rows: list[dict]) -> None:
    archs = [str(ROOT / f"experiments/archs/{n}.json") for n in ("r50", "r50_max", "r50_hybrid")]
    extra = ["--amp", "--channels-last"] if args.device == "cuda" else []
    text = _run(
        [
            sys.executable,
            "-m",
            "pflnas",
            "profile",
            "--arch",
            *archs,
            "--dataset",
            "imagenet",
            "--device",
            args.device,
            "--batch-size",
            str(args.profile_batch),
            "--repeats",
            str(args.repeats),
            *extra,
            "--json",
            "--image-size",
            str(args.image_size),
        ],
        out / "profile.log",
        1800,
    )
    (out / "profile.json").write_text(text)
    results = json.loads(text)["results"]
    base = results[0]
    for name, rep in zip(("R50", "R50-max", "R50-hybrid"), results):
        for item, unit, get in (
            ("params", "M", lambda r: r["params"] / 1e6),
            ("MACs", "G", lambda r: r["macs"] / 1e9),
            ("latency b=1", "ms", lambda r: r["latency"]["median_ms"]),
            (f"throughput b={args.profile_batch}", "images/s", lambda r: r["throughput"]["images_per_s"]),
        ):
            rows.append(_row("profile", f"{name} {item}", unit, get(rep), get(base), "R50"))


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.4e}"


def print_table(rows: list[dict], header: str) -> None:
    print(f"\n{header}\n")
    cols = f"{'section':<12} {'item':<44} {'unit':<9} {'pflnas':>11} {'baseline':>11} {'ratio':>7}  baseline"
    print(cols)
    print("-" * len(cols))
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        print(
            f"{r['section']:<12} {r['item']:<44} {r['unit']:<9} {_fmt(r['pflnas']):>11} "
            f"{_fmt(r['baseline']):>11} {ratio:>7}  {r['baseline_name']}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--out", default="runs/check")
    p.add_argument("--nni-python", help="a Python with the nni extra installed, e.g. .venv-nni/bin/python")
    p.add_argument("--search-epochs", type=int, default=2, help="CUDA: real search epochs to project from")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--compile-timeout", type=float, default=240, help="CUDA: seconds for the compile row")
    p.add_argument("--quick", action="store_true", help="CPU: fewer repeats and retrain steps")
    p.add_argument(
        "--smoke", action="store_true", help="tiny shapes that only exercise the script (numbers meaningless)"
    )
    args = p.parse_args()
    cuda = args.device == "cuda"
    args.repeats = args.repeats or (20 if cuda else 2 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    args.retrain_batch = 128 if cuda else 8
    args.retrain_steps = 30 if cuda else (2 if args.quick else 4)
    args.profile_batch = 64 if cuda else 8
    args.workers = min(12, os.cpu_count() or 1)
    args.image_size = 224
    args.step_shape = ["--init-channels", "16", "--layers", "8", "--batch-size", "64"]
    if args.smoke:
        args.repeats, args.warmup, args.retrain_batch, args.retrain_steps = 1, 0, 2, 1
        args.profile_batch, args.image_size, args.workers = 1, 64, 1
        args.step_shape = ["--init-channels", "4", "--layers", "3", "--batch-size", "4"]
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    notes: list[str] = []
    t0 = time.perf_counter()
    steps = search_steps(args, out, rows, notes)
    projection(args, out, steps, rows, notes)
    try:
        retrain(args, out, rows, notes)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        notes.append(f"retrain benchmark failed: {exc}")
    profile(args, out, rows)
    if cuda:
        compiled(args, out, steps, rows, notes)
    device = steps["darts"]["device"]
    shape = dict(zip(args.step_shape[::2], args.step_shape[1::2]))
    header = (
        f"pflnas check on {device} ({args.device}), threads {steps['darts']['threads']}, torch "
        f"{_torch_version()}, python {platform.python_version()}; search steps: cell_v1 "
        f"C={shape['--init-channels']}, {shape['--layers']} cells, batch {shape['--batch-size']}, "
        f"median of {args.repeats}{', bf16 + channels_last' if cuda else ', fp32'}; "
        f"{time.perf_counter() - t0:.0f} s in all"
    )
    print_table(rows, header)
    for n in notes:
        print(f"note: {n}")
    result = {"header": header, "device": device, "rows": rows, "notes": notes, "settings": vars(args)}
    tmp = out / "check.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out / "check.json")
    print(f"\nwrote {out / 'check.json'}")


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    main()
