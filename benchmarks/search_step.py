"""Search-step benchmark: time per step (DARTS first and second order, GDAS, PC-DARTS) and peak memory of
the cell_v1 supernet at the DARTS settings (C=16, 8 cells, batch 64, 32x32) in the supernet layouts
(``space.layout``: per_edge, per_source, batched); "vs darts" compares with first-order DARTS of the same
layout. Each configuration runs in a fresh process so peak memory is its own.

    python benchmarks/search_step.py [--device cpu|cuda] [--batch-size 64] [--repeats 3] [--json OUT]
        [--configs darts:batched,darts:per_source,darts:per_edge]

``--configs`` takes strategy:layout pairs; the older strategy:1 / strategy:0 mean per_source / per_edge.

A "step" is what the search loop does per batch: one architecture step on a held-out batch, then one weight
step (forward, backward, clip, SGD) on a training batch. Peak memory: CUDA max_memory_allocated on GPU; on CPU
the process's peak resident set size (ru_maxrss) minus its size after building the model. ``aten_ops``: the
ATen operator calls (nested ones included) torch.profiler records in one extra step, a machine-independent
figure of launch overhead.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

LAYOUTS = ("per_edge", "per_source", "batched")
CONFIGS = [
    (strategy, layout)
    for strategy in ("darts", "darts2", "gdas", "pcdarts")
    for layout in ("per_source", "per_edge", *(() if strategy == "gdas" else ("batched",)))
]


def parse_configs(text: str) -> list[tuple[str, str]]:
    """``darts:batched,darts:1`` -> ``[("darts", "batched"), ("darts", "per_source")]``."""
    out = []
    for item in text.split(","):
        strategy, _, layout = item.partition(":")
        layout = {"1": "per_source", "0": "per_edge"}.get(layout, layout)
        if layout not in LAYOUTS:
            raise ValueError(
                f"--configs: {item!r} is not strategy:layout (layouts: {', '.join(LAYOUTS)}, 1, 0)"
            )
        out.append((strategy, layout))
    return out


def count_aten_ops(step) -> int:
    """ATen operator calls in one call of ``step`` (torch.profiler, CPU-side events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(1 for e in prof.events() if e.name.startswith("aten::"))


def run_worker(cmd: list[str], label: str) -> dict | None:
    """The JSON row a worker process prints last; None (said on stderr) when it failed. Exit code 2 is a
    bad setting, the same for every configuration: it ends the benchmark with that one line."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode == 0:
        return json.loads(done.stdout.strip().splitlines()[-1])
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    if done.returncode == 2:
        print(last, file=sys.stderr)
        raise SystemExit(2)
    why = "killed (out of memory?)" if done.returncode in (-9, 137) else last
    print(f"  {label} failed (exit code {done.returncode}): {why}", file=sys.stderr)
    return None


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> dict:
    import torch

    from pflnas.config.search import ArchOptimConfig
    from pflnas.errors import ConfigError
    from pflnas.spaces import load_space
    from pflnas.strategies import StepContext, create_strategy
    from pflnas.supernet import build_supernet
    from pflnas.train.graph_step import GraphedStep, compile_forward, compile_options
    from pflnas.train.search_step import SearchStep, sgd_virtual_step

    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    space = load_space(getattr(args, "space", "cell_v1"))  # benchmarks/nni_darts.py passes another space
    space = space.replace(init_channels=args.init_channels, layers=args.layers)
    strategy = create_strategy(args.strategy, ArchOptimConfig())
    asked = getattr(args, "layout", None) or ("per_source" if args.share else "per_edge")
    layout = strategy.layout_for(asked)  # as the search loop: GDAS/SPOS asked for batched run per_source
    net = build_supernet(space, 10, layout=layout, **strategy.supernet_options()).to(device)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    strategy.attach(net)
    how = "forward" if args.compile is True else args.compile  # benchmarks/nni_darts.py passes a bool
    forward = net
    if how == "forward":  # as run.compile: the whole supernet forward
        forward = compile_forward(net, captured=bool(args.cuda_graph))
    elif how == "cells":  # each cell on its own: smaller graphs, cells of one shape share compiled code
        cells = getattr(net, "cells", None)
        if cells is None:
            raise ConfigError(f"--compile cells: the {space.name} supernet has no cells")
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 4 * len(cells))
        # static shapes: the cells share one forward's code, and automatic dynamic shapes would turn the
        # second cell's shapes into a symbolic recompile (which inductor 2.14 fails on for these cells)
        for cell in cells:  # in place: the module tree (and its parameters) stays as it is
            cell.compile(**{**compile_options(bool(args.cuda_graph)), "dynamic": False})
    weights = net.weight_parameters()
    opt = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)

    def batch():
        x = torch.randn(args.batch_size, 3, 32, 32, device=device)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, torch.randint(0, 10, (args.batch_size,), device=device)

    tb, vb = batch(), batch()

    def amp():  # autocast's weight-cast cache must be off under CUDA-graph capture
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp, cache_enabled=False)

    body = SearchStep(net, strategy, opt, weights, grad_clip=5.0, forward=forward, autocast=amp)
    ctx = StepContext(loss=body.loss, virtual_step=sgd_virtual_step(opt), lr=0.025)
    if args.cuda_graph:
        graphed = GraphedStep(lambda t, a: body(t, a, ctx, True), [opt, *strategy.optimizers()], device)

        def step():
            graphed(tb, vb)

    else:

        def step():
            body(tb, vb, ctx, True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    base_rss = rss_mb()
    for _ in range(max(args.warmup, 5) if args.cuda_graph else args.warmup):  # graph: 3 eager, capture
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else rss_mb() - base_rss
    aten_ops = count_aten_ops(lambda: (step(), sync()))
    return {
        "strategy": args.strategy,
        "layout": layout,
        "share": layout != "per_edge",
        "step_s": statistics.median(times),
        "step_s_min": min(times),
        "peak_mb": peak,
        "aten_ops": aten_ops,
        "threads": torch.get_num_threads(),
        "compile": how or False,
        "cuda_graph": bool(args.cuda_graph),
        "amp": bool(args.amp),
        "channels_last": bool(args.channels_last),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if cuda_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--init-channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument(
        "--compile",
        nargs="?",
        const="forward",
        choices=["forward", "cells"],
        help="torch.compile the whole supernet forward (as run.compile; the default) or each cell on its "
        "own; with --cuda-graph the compiled code is captured in the step graph (inductor's CUDA graphs off)",
    )
    p.add_argument(
        "--cuda-graph",
        action="store_true",
        help="replay each step as one CUDA graph (run.cuda_graph); with --compare, both in one run",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="with --cuda-graph: run every configuration eagerly and graphed, and print the ratio",
    )
    p.add_argument(
        "--configs",
        help="comma-separated strategy:layout pairs, layouts per_edge, per_source, batched (or 1 / 0 for "
        "per_source / per_edge), e.g. darts:batched,darts:per_source "
        "(default: darts, darts2, gdas, pcdarts x per_source, per_edge, and batched for all but gdas, which "
        "runs per_source when asked for batched)",
    )
    p.add_argument("--json", help="also write the rows as JSON to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--strategy", default="darts", help=argparse.SUPPRESS)
    p.add_argument("--share", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--layout", choices=LAYOUTS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.compare and not args.cuda_graph:
        p.error("--compare compares eager with --cuda-graph steps; add --cuda-graph")
    if args.cuda_graph and not args.device.startswith("cuda"):
        p.error(f"--cuda-graph needs a CUDA device, not --device {args.device}")
    if args.worker:
        from pflnas.errors import PflnasError

        args.share = bool(args.share)
        try:
            row = worker(args)
        except PflnasError as exc:  # a bad setting (e.g. too few layers): one line, exit code 2
            print(f"search_step.py: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        print(json.dumps(row))
        return
    common = [
        "--device", args.device, "--batch-size", str(args.batch_size),
        "--init-channels", str(args.init_channels), "--layers", str(args.layers),
        "--repeats", str(args.repeats), "--warmup", str(args.warmup),
    ] + ["--amp"] * args.amp + ["--channels-last"] * args.channels_last  # fmt: skip
    common += ["--compile", args.compile] if args.compile else []
    graph_modes = [False, True] if args.compare else [bool(args.cuda_graph)]
    try:
        configs = parse_configs(args.configs) if args.configs else CONFIGS
    except ValueError as exc:
        p.error(str(exc))
    rows, failed = [], 0
    for strategy, layout in configs:
        for graph in graph_modes:
            cmd = [sys.executable, __file__, "--worker", "--strategy", strategy, "--layout", layout]
            cmd += common + ["--cuda-graph"] * graph
            row = run_worker(cmd, f"{strategy} {layout} graph={graph}")
            if row is None:
                failed += 1
                continue
            rows.append(row)
            print(
                f"  measured {strategy} {layout} graph={graph}: {rows[-1]['step_s']:.4f} s, "
                f"{rows[-1]['aten_ops']} ATen ops",
                file=sys.stderr,
            )
    if rows:
        print_table(rows, args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"settings": vars(args), "rows": rows}, fh, indent=2)
    if failed:
        raise SystemExit(1)


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(
        f"\ncell_v1 supernet, C={args.init_channels}, {args.layers} cells, batch {args.batch_size}, 32x32, "
        f"device {rows[0]['device']}, threads {rows[0]['threads']}, amp {args.amp}, "
        f"median of {args.repeats}\n"
    )
    header = (
        f"{'strategy':<8} {'layout':<11} {'graph':<6} {'step (s)':>9} {'vs eager':>9} "
        f"{'vs per-edge':>12} {'vs darts':>9} {'peak MB':>9} {'vs per-edge':>12} {'vs darts':>9} "
        f"{'ATen ops':>9} {'vs per-src':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        same = [r for r in rows if r["cuda_graph"] == row["cuda_graph"]]
        base = next((r for r in same if (r["strategy"], r["layout"]) == (row["strategy"], "per_edge")), row)
        src = next((r for r in same if (r["strategy"], r["layout"]) == (row["strategy"], "per_source")), row)
        darts = next((r for r in same if r["strategy"] == "darts" and r["layout"] == row["layout"]), row)
        eager = next(
            (
                r
                for r in rows
                if (r["strategy"], r["layout"], r["cuda_graph"]) == (row["strategy"], row["layout"], False)
            ),
            row,
        )
        print(
            f"{row['strategy']:<8} {row['layout']:<11} {'yes' if row['cuda_graph'] else 'no':<6} "
            f"{row['step_s']:>9.4f} "
            f"{row['step_s'] / eager['step_s']:>8.3f}x "
            f"{row['step_s'] / base['step_s']:>11.2f}x {row['step_s'] / darts['step_s']:>8.2f}x "
            f"{row['peak_mb']:>9.0f} {row['peak_mb'] / max(base['peak_mb'], 1e-9):>11.2f}x "
            f"{row['peak_mb'] / max(darts['peak_mb'], 1e-9):>8.2f}x "
            f"{row['aten_ops']:>9} {row['aten_ops'] / max(src['aten_ops'], 1):>10.2f}x"
        )


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
