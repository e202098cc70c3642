"""Latency-aware search benchmark: does raising ``--latency-weight`` lower the measured latency of what the
search finds?

Runs the same short real search (same space, data subset, seed, epochs) once per latency weight lambda, then
builds every found architecture's derived network at the search network's width and depth (the shapes the
latency table was timed at) and measures its forward latency at batch 1 on the same device with
:func:`pflnas.measure.speed.measure_latency` (the ``pflnas profile`` machinery). The networks are timed in
interleaved rounds and each one's latency is the median over rounds, so load drifting on a shared machine
hits all of them alike.

    PFLNAS_DATA=/path/to/cifar10 python benchmarks/latency_weight.py [--lambdas 0,0.1,1] [--json OUT]

Columns: lambda; E[lat], the expected latency (ms, from the op table) of the final op probabilities;
measured, the derived network's median latency (ms, batch 1) and x, its ratio to lambda=0's; min, the fastest
single pass over all rounds (the least disturbed by other work on a busy machine) and its ratio; the share
of kept ops that are parameter-free; the final held-out accuracy of the supernet; the kept ops. A run
directory that already holds a finished search (``--out`` of an earlier run) is measured again, not re-run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lambdas", default="0,0.1,1", help="comma-separated latency weights (per ms)")
    p.add_argument("--space", default="cell_v1")
    p.add_argument("--data-dir", default=os.environ.get("PFLNAS_DATA"), help="default: $PFLNAS_DATA")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for search, table and timing")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--subset", type=int, default=400, help="training images (half weights, half alphas)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-limit", type=int, default=200)
    p.add_argument("--init-channels", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per network")
    p.add_argument("--repeats", type=int, default=30, help="timed passes per network and round")
    p.add_argument("--out", help="where the search runs go (default: a temporary directory)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    return p.parse_args()


def _search(args: argparse.Namespace, weight: float, out: Path) -> dict[str, Any]:
    from pflnas.arch import load_architecture
    from pflnas.config.loader import build_config
    from pflnas.config.search import SearchConfig
    from pflnas.config.validate import validate_search_config
    from pflnas.train.search import SearchRun

    overrides = [
        f"space.name={args.space}",
        f"space.init_channels={args.init_channels}",
        f"space.layers={args.layers}",
        f"data.data_dir={args.data_dir}",
        f"data.subset={args.subset}",
        f"data.batch_size={args.batch_size}",
        f"data.eval_limit={args.eval_limit}",
        f"run.epochs={args.epochs}",
        f"run.seed={args.seed}",
        f"run.device={args.device}",
        f"run.threads={args.threads}",
        "run.progress=false",
        f"latency.weight={weight}",
        f"latency.device={args.device}",
    ]
    cfg = build_config(SearchConfig, [], overrides)
    validate_search_config(cfg)
    t0 = time.perf_counter()
    if (out / "found.json").is_file():  # an earlier run of this benchmark: measure it again
        print(f"  reusing the finished search in {out}", flush=True)
    else:
        SearchRun(cfg, out).run()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "lambda": weight,
        "run_dir": str(out),
        "search_s": round(time.perf_counter() - t0, 1),
        "arch": load_architecture(out / "found.json"),
        "val_acc": rows[-1]["val_acc"],
    }


def _measure(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    import torch

    from pflnas.measure.context import SpeedConfig
    from pflnas.measure.speed import measure_latency
    from pflnas.models import build_from_config, resolve_network_config

    cfg = SpeedConfig(device=args.device, batch_size=1, repeats=args.repeats, threads=args.threads)
    nets = []
    for r in results:
        config = resolve_network_config(
            r["arch"], dataset="cifar10", init_channels=args.init_channels, layers=args.layers
        )
        torch.manual_seed(0)
        nets.append((build_from_config(r["arch"], config), config.input_shape(batch=1)))
    per_round: list[list[float]] = [[] for _ in nets]
    fastest = [math.inf for _ in nets]
    for _ in range(args.rounds):
        for i, (model, shape) in enumerate(nets):
            stats = measure_latency(model, shape, cfg)
            per_round[i].append(stats.median)
            fastest[i] = min(fastest[i], stats.min)
    context = measure_latency(nets[0][0], nets[0][1], cfg).context
    for r, times, best in zip(results, per_round, fastest):
        r["measured_ms"] = statistics.median(times)
        r["measured_rounds_ms"] = times
        r["fastest_ms"] = best
    results[0]["context"] = context.describe()


def main() -> None:
    args = _args()
    if not args.data_dir:
        raise SystemExit("give --data-dir or set PFLNAS_DATA to the CIFAR-10 archive or folder")
    lambdas = [float(v) for v in args.lambdas.split(",")]
    if 0.0 not in lambdas:
        lambdas.insert(0, 0.0)
    import torch

    from pflnas.config.loader import build_config
    from pflnas.config.search import SearchConfig
    from pflnas.measure.context import SpeedConfig
    from pflnas.measure.latency_objective import expected_latency
    from pflnas.measure.latency_table import cached_table
    from pflnas.spaces import resolve_space

    torch.set_num_threads(args.threads)
    root = Path(args.out or tempfile.mkdtemp(prefix="pflnas-latency-bench-"))
    results = []
    for weight in lambdas:
        out = root / f"lambda-{weight:g}"
        print(f"search with latency weight {weight:g} -> {out}", flush=True)
        results.append(_search(args, weight, out))
    space = resolve_space(
        build_config(
            SearchConfig,
            [],
            [
                f"space.name={args.space}",
                f"space.init_channels={args.init_channels}",
                f"space.layers={args.layers}",
            ],
        ).space
    )
    speed = SpeedConfig(device=args.device, batch_size=1, repeats=20, threads=args.threads)
    source = cached_table(space, 32, speed)  # the searches' table (cached by the first lambda > 0)
    print(f"latency table: {'reused' if source.reused else 'measured'} {source.path}", flush=True)
    for r in results:
        r["expected_ms"] = expected_latency(r["arch"].probabilities, source.table)
    _measure(args, results)

    base = results[0]["measured_ms"]
    print(f"\ncontext: {results[0]['context']}")
    print(
        f"space {args.space} (C={args.init_channels}, {args.layers} cells), {args.subset} images, "
        f"{args.epochs} epochs, batch {args.batch_size}, seed {args.seed}; latency: derived network, "
        f"batch 1, median of {args.rounds} interleaved rounds of {args.repeats} passes"
    )
    heads = [
        ("lambda", 7),
        ("E[lat] ms", 9),
        ("measured ms", 11),
        ("x", 5),
        ("min ms", 7),
        ("x", 5),
        ("param-free", 10),
        ("val acc", 7),
    ]
    fast = results[0]["fastest_ms"]
    print("  ".join(h.rjust(w) for h, w in heads) + "  ops")
    for r in results:
        arch = r["arch"]
        ops = ", ".join(f"{op} {n}" for op, n in sorted(arch.op_counts().items(), key=lambda kv: -kv[1]))
        print(
            f"{r['lambda']:>7g}  {r['expected_ms']:>9.3f}  {r['measured_ms']:>11.3f}  "
            f"{r['measured_ms'] / base:>5.2f}  {r['fastest_ms']:>7.3f}  {r['fastest_ms'] / fast:>5.2f}  "
            f"{arch.param_free_share():>10.2f}  {r['val_acc']:>7.3f}  {ops}"
        )
    if args.json:
        data = {
            "args": vars(args),
            "context": results[0]["context"],
            "latency_table": str(source.path),
            "results": [
                {
                    "lambda": r["lambda"],
                    "expected_latency_ms": r["expected_ms"],
                    "measured_latency_ms": r["measured_ms"],
                    "measured_rounds_ms": r["measured_rounds_ms"],
                    "ratio_vs_lambda0": r["measured_ms"] / base,
                    "fastest_pass_ms": r["fastest_ms"],
                    "fastest_ratio_vs_lambda0": r["fastest_ms"] / fast,
                    "param_free_share": r["arch"].param_free_share(),
                    "val_acc": r["val_acc"],
                    "op_counts": r["arch"].op_counts(),
                    "search_s": r["search_s"],
                    "run_dir": r["run_dir"],
                }
                for r in results
            ],
        }
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
