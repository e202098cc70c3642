"""Seed-batch benchmark: time per first-order DARTS search step and peak memory of N seeds' supernets folded
into ONE grouped network (:class:`~pflnas.supernet.grouped.GroupedSupernet`) against N separate supernets
stepped one after another in one process (``sequential``: what N separate searches cost per step, measured,
not N times one supernet's step). cell_v1 at the DARTS settings by default (C=16, 8 cells, batch 64, 32x32).

    python benchmarks/seed_batch.py [--seeds 1,2,5,10] [--device cpu|cuda] [--batch-size 64]
        [--strategy darts|darts2|pcdarts] [--cuda-graph] [--init-channels 16] [--layers 8] [--repeats 3]
        [--warmup 1] [--threads T] [--json OUT]

A "step" is the search loop's step body (``SearchStep``, what ``pflnas search`` and ``--seeds`` run): the
strategy's architecture step on a held-out batch (Adam), then the weight step on a training batch (the
gradient norm clipped at 5 per seed, SGD lr 0.025 momentum 0.9 wd 3e-4). Every seed has its own random
batches. Grouped: one network for all N seeds (the loss is the sum of the seeds' mean losses, so each seed's
gradients are its own). Sequential: N ``per_source`` supernets (``--layout``; per_source is the layout the
grouped network mirrors and a search's default), each stepped in turn; one step is all N of them.
``--cuda-graph`` replays every step body as a CUDA graph, as ``run.cuda_graph`` does.

Each configuration runs in a fresh process (peak memory is its own), in the order grouped 1, sequential 1,
sequential 2, grouped 2, ... (alternating, and which goes first alternates) so machine noise hits both.
Peak memory: CUDA ``max_memory_allocated`` (everything: weights, optimizer state, activations); on CPU the
peak resident set size (ru_maxrss) minus the size after building the nets and optimizers, i.e. the step's
activations and optimizer state. The sequential peak is that of stepping the N nets one after another (one
net's activations at a time), not of N searches running side by side. ``aten_ops``: ATen operator calls
torch.profiler records in one extra step (a machine-independent figure of launch overhead).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_step import count_aten_ops, cuda_available, rss_mb, run_worker  # noqa: E402

KINDS = ("grouped", "sequential")
LAYOUTS = ("per_edge", "per_source", "batched")
GRAD_CLIP = 5.0
STRATEGIES = ("darts", "darts2", "pcdarts")  # the strategies pflnas search --seeds groups


def parse_seeds(text: str) -> list[int]:
    """``"1,2,5,10"`` -> ``[1, 2, 5, 10]``; ValueError on anything but positive whole numbers."""
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise ValueError(f"--seeds: {text!r} is not a comma-separated list of whole numbers") from None
    if any(n < 1 for n in seeds):
        raise ValueError(f"--seeds: {text!r}: every seed count must be at least 1")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: {text!r} repeats a seed count")
    return seeds


def _load() -> float:
    return os.getloadavg()[0]


def _body(args, net, lead: tuple[int, ...], device):
    """``step()``: the search loop's step body (:class:`~pflnas.train.search_step.SearchStep`: the strategy's
    architecture step, then the weight step with clipping at 5 and SGD) for ``net`` on fixed random batches of
    shape ``[*lead, batch]``; under ``--cuda-graph`` replayed as one CUDA graph (:class:`GraphedStep`)."""
    import torch

    from pflnas.strategies import StepContext
    from pflnas.train.search_step import SearchStep, sgd_virtual_step

    strategy = _strategy(args)
    net = net.to(device)
    strategy.attach(net)
    weights = net.weight_parameters()
    sgd = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)
    body = SearchStep(net, strategy, sgd, weights, GRAD_CLIP)
    ctx = StepContext(loss=body.loss, virtual_step=sgd_virtual_step(sgd), lr=0.025)
    shape = (*lead, args.batch_size)

    def batch():
        return torch.randn(*shape, 3, 32, 32, device=device), torch.randint(0, 10, shape, device=device)

    train, held_out = batch(), batch()
    if not args.cuda_graph:
        return lambda: body(train, held_out, ctx, True)
    from pflnas.train.graph_step import GraphedStep

    graphed = GraphedStep(body, [sgd, *strategy.optimizers()], device)  # type: ignore[arg-type]
    graphed.set_body(lambda t, a: body(t, a, ctx, True))
    return lambda: graphed(train, held_out)


def _strategy(args):
    from pflnas.config.search import ArchOptimConfig
    from pflnas.strategies import create_strategy

    return create_strategy(args.strategy, ArchOptimConfig())


def _grouped_step(args, space, device):
    """One grouped network of ``args.n`` seeds stepped by the loop's step body; returns ``step()``."""
    from pflnas.supernet.grouped import GroupedSupernet

    options = _strategy(args).supernet_options()
    return _body(args, GroupedSupernet(space, 10, args.n, **options), (args.n,), device)


def _sequential_step(args, space, device):
    """``args.n`` separate supernets, each with its own strategy, SGD and batches; ``step()`` steps them one
    after another."""
    from pflnas.supernet import build_supernet

    options = _strategy(args).supernet_options()
    steps = [
        _body(args, build_supernet(space, 10, layout=args.layout, **options), (), device)
        for _ in range(args.n)
    ]

    def step():
        for one in steps:
            one()

    return step


def worker(args: argparse.Namespace) -> dict:
    import torch

    from pflnas.spaces import load_space

    load_before = _load()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    space = load_space("cell_v1").replace(init_channels=args.init_channels, layers=args.layers)
    step = (_grouped_step if args.worker == "grouped" else _sequential_step)(args, space, device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    base_rss = rss_mb()
    for _ in range(max(args.warmup, 4) if args.cuda_graph else args.warmup):  # 3 eager steps, then capture
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
        "kind": args.worker,
        "seeds": args.n,
        "step_s": statistics.median(times),
        "step_s_min": min(times),
        "peak_mb": peak,
        "aten_ops": aten_ops,
        "threads": torch.get_num_threads(),
        "layout": "grouped" if args.worker == "grouped" else args.layout,
        "strategy": args.strategy,
        "cuda_graph": args.cuda_graph,
        "load_before": load_before,
        "load_after": _load(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
    }


class Parser(argparse.ArgumentParser):
    """Bad usage as one line on stderr, exit code 2 (as pflnas' CLI reports it)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1,2,5,10", help="comma-separated seed counts N (default 1,2,5,10)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda where there is one, else cpu")
    p.add_argument("--batch-size", type=int, default=64, help="per seed")
    p.add_argument("--init-channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, help="torch.set_num_threads in each worker (default: torch's)")
    p.add_argument(
        "--layout", choices=LAYOUTS, default="per_source", help="the separate supernets' layout (sequential)"
    )
    p.add_argument(
        "--strategy", choices=STRATEGIES, default="darts", help="the step's strategy (default darts)"
    )
    p.add_argument(
        "--cuda-graph",
        action="store_true",
        help="replay each step body as one CUDA graph, as run.cuda_graph does (--device cuda)",
    )
    p.add_argument("--json", help="also write the rows as JSON to this file")
    p.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> list[int]:
    for name, low in (("batch_size", 1), ("init_channels", 1), ("layers", 1), ("repeats", 1), ("warmup", 0)):
        if getattr(args, name) < low:
            p.error(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        p.error(str(exc))
    if args.cuda_graph and args.device != "cuda":
        p.error("--cuda-graph needs --device cuda")
    if args.device is None:  # checked last: it imports torch
        args.device = "cuda" if cuda_available() else "cpu"
    elif args.device == "cuda" and not cuda_available():
        p.error("--device cuda: no CUDA device is available")
    return seeds


def main() -> None:
    p = build_parser()
    args = p.parse_args()
    seeds = check_args(p, args)
    if args.worker:
        from pflnas.errors import PflnasError

        try:
            row = worker(args)
        except PflnasError as exc:  # a bad setting (e.g. too few layers): one line, exit code 2
            print(f"seed_batch.py: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        print(json.dumps(row))
        return
    common = [
        "--device", args.device, "--batch-size", str(args.batch_size),
        "--init-channels", str(args.init_channels), "--layers", str(args.layers),
        "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--layout", args.layout,
        "--strategy", args.strategy,
    ] + (["--threads", str(args.threads)] if args.threads else []) + (
        ["--cuda-graph"] if args.cuda_graph else []
    )  # fmt: skip
    load_before = os.getloadavg()
    rows, failed = [], 0
    for i, n in enumerate(seeds):
        for kind in KINDS if i % 2 == 0 else KINDS[::-1]:
            cmd = [sys.executable, __file__, "--worker", kind, "--n", str(n), *common]
            row = run_worker(cmd, f"{kind} N={n}")
            if row is None:
                failed += 1
                continue
            rows.append(row)
            print(
                f"  measured {kind} N={n}: {rows[-1]['step_s']:.4f} s, {rows[-1]['aten_ops']} ATen ops",
                file=sys.stderr,
            )
    load_after = os.getloadavg()
    if rows:
        print_table(rows, args, load_before, load_after)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("worker", "n")}
        loads = {"load_before": list(load_before), "load_after": list(load_after)}
        with open(args.json, "w") as fh:
            json.dump({"settings": {**settings, **loads}, "rows": rows}, fh, indent=2)
    if failed:
        raise SystemExit(1)


def _ratio(a: float | None, b: float | None, fmt: str) -> str:
    return format(a / b, fmt) + "x" if a is not None and b else "-"


def print_table(rows: list[dict], args: argparse.Namespace, before, after) -> None:
    threads = sorted({r["threads"] for r in rows})
    print(
        f"\ncell_v1, C={args.init_channels}, {args.layers} cells, batch {args.batch_size} per seed, 32x32, "
        f"{args.strategy} step{' (CUDA graph)' if args.cuda_graph else ''}, device {rows[0]['device']}, "
        f"torch threads {'/'.join(map(str, threads))}, "
        f"median of {args.repeats}; sequential = N separate {args.layout} supernets stepped in turn\n"
        f"load average (1/5/15 min) before {' '.join(f'{x:.2f}' for x in before)}, "
        f"after {' '.join(f'{x:.2f}' for x in after)}\n"
    )
    header = (
        f"{'N':>3} {'grouped s':>10} {'seq s':>10} {'g/seq':>7} {'grouped MB':>11} {'seq MB':>9} "
        f"{'g/seq':>7} {'grp ATen':>9} {'seq ATen':>9} {'g/seq':>7}"
    )
    print(header)
    print("-" * len(header))
    by = {(r["kind"], r["seeds"]): r for r in rows}
    for n in dict.fromkeys(r["seeds"] for r in rows):
        g, s = by.get(("grouped", n)), by.get(("sequential", n))

        def get(r, key):
            return r[key] if r else None

        def cell(v, fmt, width):
            return format(v, f">{width}{fmt}") if v is not None else f"{'-':>{width}}"

        print(
            f"{n:>3} {cell(get(g, 'step_s'), '.4f', 10)} {cell(get(s, 'step_s'), '.4f', 10)} "
            f"{_ratio(get(g, 'step_s'), get(s, 'step_s'), '.3f'):>7} "
            f"{cell(get(g, 'peak_mb'), '.0f', 11)} {cell(get(s, 'peak_mb'), '.0f', 9)} "
            f"{_ratio(get(g, 'peak_mb'), get(s, 'peak_mb'), '.2f'):>7} "
            f"{cell(get(g, 'aten_ops'), 'd', 9)} {cell(get(s, 'aten_ops'), 'd', 9)} "
            f"{_ratio(get(g, 'aten_ops'), get(s, 'aten_ops'), '.3f'):>7}"
        )


if __name__ == "__main__":
    main()
