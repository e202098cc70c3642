"""pflnas vs NNI 3.0 DARTS: time per search step and peak memory on the same space, batch, device and threads.

    python benchmarks/nni_darts.py [--space cell_v1|darts] [--device cpu|cuda] [--batch-size 64]
        [--init-channels 16] [--layers 8] [--threads N] [--repeats 3] [--warmup 1] [--rounds 1]
        [--nni-python PYTHON] [--json OUT]

Run it with an interpreter that has the ``nni`` extra (``.venv-nni/bin/python``), or give that interpreter as
``--nni-python`` (the pflnas rows then run in the current one). Without NNI it prints the pflnas rows and one
line saying why NNI is missing.

A "step" is what each search loop does per batch: one architecture step on a held-out batch, then one weight
step (forward, backward, gradient clipping at 5, SGD with momentum 0.9 and weight decay 3e-4), first-order
DARTS with Adam(3e-4, betas (0.5, 0.999), wd 1e-3) on the alphas, in fp32:

* pflnas: ``pflnas.strategies`` ``darts`` / ``darts2`` and the weight step of benchmarks/search_step.py (its
  worker is reused) in the supernet layouts (``space.layout``): ``per_source`` (pflnas' default: the
  parameter-free ops once per source node), ``batched`` (also each trainable op kind once per source node,
  as one wide op over its edges) and ``per_edge`` (DARTS' layout). The pflnas darts rows carry their
  ratios to each NNI row (step time and peak memory), all measured in the same run.
* NNI: ``nni.nas.strategy.DARTS`` running in NNI's in-process engine (its Lightning loop, as a user runs it)
  on the space built by ``pflnas.bridges.nni`` from the very same pflnas candidate modules, in NNI's own
  DARTS ``Cell`` layout (every edge mixes the candidates plus NNI's implicit "no edge") and in the edge
  layout of the pflnas supernet (one ``LayerChoice`` per edge). A Lightning callback times
  ``on_train_batch_start`` to ``on_train_batch_end``, which covers NNI's architecture and weight steps and
  leaves out fetching the batch (the data already sits on the device in both cases).

NNI 3.0 has no second-order DARTS ("Second order (unrolled 2nd-order derivatives) is not supported yet",
its DARTS docstring), so the ``darts2`` row has no NNI counterpart.

Every configuration runs in a fresh process. Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over
the timed steps; on CPU the process's peak resident set size (ru_maxrss) at the end minus its value just
before the first step (after building the network and optimizers), the same for both. ``--rounds R`` runs the
whole set R times, interleaved, and reports each configuration's best round (its median step time in the
round least disturbed by other load on the machine; peak memory: the median over rounds); the JSON keeps
every round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (label, kind, options): kind "pflnas" -> search_step's worker, "nni" -> NNI's DARTS through the bridge
# ("supernet": pflnas' space.layout; "layout": NNI's)
CONFIGS = [
    ("pflnas darts, per source node", "pflnas", {"strategy": "darts", "supernet": "per_source"}),
    ("pflnas darts, batched", "pflnas", {"strategy": "darts", "supernet": "batched"}),
    ("pflnas darts, per edge", "pflnas", {"strategy": "darts", "supernet": "per_edge"}),
    ("NNI DARTS, NNI Cell", "nni", {"layout": "cell"}),
    ("NNI DARTS, edge LayerChoices", "nni", {"layout": "edges"}),
    (
        "pflnas darts2 (2nd order), per source node",
        "pflnas",
        {"strategy": "darts2", "supernet": "per_source"},
    ),
    ("pflnas darts2 (2nd order), batched", "pflnas", {"strategy": "darts2", "supernet": "batched"}),
]
NNI_NO_SECOND_ORDER = "NNI 3.0 has no second-order DARTS"


class _Args(argparse.Namespace):
    """search_step's worker reads its options as attributes; any it has that we do not set are off."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        return None


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pflnas_worker(args: argparse.Namespace) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    import search_step

    ns = _Args(
        device=args.device,
        batch_size=args.batch_size,
        init_channels=args.init_channels,
        layers=args.layers,
        repeats=args.repeats,
        warmup=args.warmup,
        amp=False,
        channels_last=False,
        compile=False,
        strategy=args.strategy,
        layout=args.supernet,
        space=args.space,
    )
    row = search_step.worker(ns)
    return {"step_s": row["step_s"], "step_s_min": row["step_s_min"], "peak_mb": row["peak_mb"],
            "threads": row["threads"], "device": row["device"]}  # fmt: skip


def nni_worker(args: argparse.Namespace) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from pflnas.bridges.nni import quiet_nni, require_nni

    require_nni()
    import pytorch_lightning as pl
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace
    from torch.utils.data import TensorDataset

    from pflnas.bridges.nni import darts_sgd, nni_strategy, to_nni_model_space
    from pflnas.spaces import load_space

    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    steps = args.warmup + args.repeats
    space = load_space(args.space).replace(init_channels=args.init_channels, layers=args.layers)

    def data() -> TensorDataset:  # already on the device, as search_step's batches
        n = args.batch_size * steps
        return TensorDataset(
            torch.randn(n, 3, 32, 32, device=device), torch.randint(0, 10, (n,), device=device)
        )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.base_rss = 0.0
            self.t0 = 0.0

        def on_train_start(self, trainer, module) -> None:  # noqa: ANN001
            self.base_rss = _rss_mb()

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
            if batch_idx == args.warmup and device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync()
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            sync()
            self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    with quiet_nni():
        evaluator = Classification(
            learning_rate=0.025,
            weight_decay=3e-4,
            optimizer=darts_sgd(),
            train_dataloaders=DataLoader(data(), batch_size=args.batch_size, shuffle=False),
            val_dataloaders=DataLoader(data(), batch_size=args.batch_size, shuffle=False),
            num_classes=10,
            max_epochs=1,
            limit_train_batches=steps,
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[timer],
        )
        model_space = to_nni_model_space(space, layout=args.layout)
        strategy = nni_strategy("darts", gradient_clip_val=5.0)
        strategy.initialize(RawFormatModelSpace(model_space, evaluator), SequentialExecutionEngine())
        strategy.run()
    if len(timer.times) != steps:
        raise RuntimeError(f"NNI ran {len(timer.times)} steps, expected {steps}")
    times = timer.times[args.warmup :]
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _rss_mb() - timer.base_rss
    import nni

    return {
        "step_s": statistics.median(times),
        "step_s_min": min(times),
        "peak_mb": peak,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "nni_version": nni.__version__,
        "lightning_version": pl.__version__,
    }


def nni_reason(python: str) -> str | None:
    """Why ``python`` cannot run NNI's DARTS through the bridge (None when it can)."""
    code = "from pflnas.bridges.nni import nni_unavailable_reason as r; print(r() or '')"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python}: {exc}"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["failed"])[-1]
        return f"{python}: {last}"
    reason = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    return reason or None


def _run(python: str, kind: str, options: dict, common: list[str]) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--worker", kind, *common]
    for key, value in options.items():
        cmd += [f"--{key}", str(value)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        why = "killed (out of memory?)" if out.returncode in (-9, 137) else (lines or ["no output"])[-1]
        tail = "\n".join(lines[-15:])
        raise RuntimeError(f"worker failed: {' '.join(cmd)}\n{tail}\nexit code {out.returncode}: {why}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="cell_v1", help="a DARTS-cell space: cell_v1 (default) or darts")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--init-channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="run every configuration this many times")
    p.add_argument("--nni-python", default=sys.executable, help="interpreter with the nni extra")
    p.add_argument("--json", help="also write the settings and rows as JSON to this file")
    p.add_argument("--worker", choices=["pflnas", "nni"], help=argparse.SUPPRESS)
    p.add_argument("--strategy", default="darts", help=argparse.SUPPRESS)
    p.add_argument(
        "--supernet",
        choices=["per_edge", "per_source", "batched"],
        default="per_source",
        help=argparse.SUPPRESS,
    )
    p.add_argument("--layout", default="cell", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        row = pflnas_worker(args) if args.worker == "pflnas" else nni_worker(args)
        print(json.dumps(row))
        return

    reason = nni_reason(args.nni_python)
    common = [
        "--space", args.space, "--device", args.device, "--batch-size", str(args.batch_size),
        "--init-channels", str(args.init_channels), "--layers", str(args.layers),
        "--threads", str(args.threads), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
    ]  # fmt: skip
    configs = [c for c in CONFIGS if c[1] == "pflnas" or reason is None]
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in configs}
    failed: dict[str, str] = {}
    for _ in range(args.rounds):
        for label, kind, options in configs:
            python = sys.executable if kind == "pflnas" else args.nni_python
            try:
                runs[label].append(_run(python, kind, options, common))
            except RuntimeError as exc:  # e.g. killed for memory: report it, keep the other rows
                failed[label] = str(exc).splitlines()[-1]
                print(f"  {label} failed: {exc}", file=sys.stderr)
                continue
            print(f"  measured {label}: {runs[label][-1]['step_s']:.3f} s", file=sys.stderr)
    load_after = os.getloadavg()
    rows = []
    for label, kind, options in configs:
        rs = runs[label]
        if not rs:
            rows.append({"config": label, "impl": kind, **options, "error": failed[label]})
            continue
        rows.append(
            {
                "config": label,
                "impl": kind,
                **options,
                "step_s": min(r["step_s"] for r in rs),  # the least disturbed round
                "step_s_min": min(r["step_s_min"] for r in rs),
                "peak_mb": statistics.median(r["peak_mb"] for r in rs),
                "rounds": [{"step_s": r["step_s"], "peak_mb": r["peak_mb"]} for r in rs],
                "threads": rs[0]["threads"],
                "device": rs[0]["device"],
                **{k: rs[0][k] for k in ("nni_version", "lightning_version") if k in rs[0]},
            }
        )
    refs = {r["layout"]: r for r in rows if r["impl"] == "nni" and "error" not in r}
    for row in rows:
        if row["impl"] == "pflnas" and row["strategy"] == "darts" and "error" not in row:
            for layout, ref in refs.items():
                row[f"step_vs_nni_{layout}"] = row["step_s"] / ref["step_s"]
                row[f"mem_vs_nni_{layout}"] = row["peak_mb"] / max(ref["peak_mb"], 1e-9)

    ok = next(r for r in rows if "error" not in r) if any("error" not in r for r in rows) else {}
    print(
        f"\nDARTS search step, space {args.space}, C={args.init_channels}, {args.layers} cells, "
        f"batch {args.batch_size}, 32x32, fp32, device {ok.get('device', args.device)}, "
        f"threads {ok.get('threads', args.threads or 'default')}, "
        f"median of {args.repeats} steps, best of {args.rounds} round(s); load average "
        f"{load_before[0]:.1f} -> {load_after[0]:.1f}\n"
    )
    header = (
        f"{'implementation':<44} {'step (s)':>9} {'peak MB':>9} {'step/NNI Cell':>14} {'mem/NNI Cell':>13} "
        f"{'step/NNI edges':>15} {'mem/NNI edges':>14}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        if "error" in row:
            print(f"{row['config']:<44} failed: {row['error']}")
            continue
        cols = []
        for layout in ("cell", "edges"):
            if f"step_vs_nni_{layout}" in row:
                cols += [f"{row[f'step_vs_nni_{layout}']:.2f}x", f"{row[f'mem_vs_nni_{layout}']:.2f}x"]
            else:
                cols += ["", ""]
        print(
            f"{row['config']:<44} {row['step_s']:>9.3f} {row['peak_mb']:>9.0f} {cols[0]:>14} {cols[1]:>13} "
            f"{cols[2]:>15} {cols[3]:>14}"
        )
    if reason is not None:
        print(f"\nNNI not available: {reason} ({args.nni_python})")
    else:
        print("\nratios are pflnas / NNI (below 1: pflnas is faster or smaller);", NNI_NO_SECOND_ORDER + ".")
        nni_row = next((r for r in rows if r["impl"] == "nni" and "error" not in r), {})
        print(f"NNI {nni_row.get('nni_version')} with pytorch-lightning {nni_row.get('lightning_version')}")
    if args.json:
        with open(args.json, "w") as fh:
            settings = {
                k: v for k, v in vars(args).items() if k not in ("worker", "strategy", "supernet", "layout")
            }
            json.dump(
                {
                    "settings": settings,
                    "nni": {"available": reason is None, "reason": reason},
                    "load_average": [load_before[0], load_after[0]],
                    "rows": rows,
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
