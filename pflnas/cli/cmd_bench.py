"""``pflnas bench nb201``: search strategies scored against NAS-Bench-201 ground truth, and the ground truth
itself (``--op-wins``, ``--zero-cost-quality``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from pflnas.bench.jobs import Job, MultiTrialJob, OneShotJob, run_jobs
from pflnas.bench.nb201 import NB201Table, load_nb201_table, nb201_string
from pflnas.bench.runner import (
    MULTI_TRIAL,
    MultiTrialPlan,
    finished_seed,
    oneshot_settings,
    run_multitrial_seed,
    run_oneshot_seed,
    save_seed,
    seed_file,
)
from pflnas.bench.selection import SignalFactory
from pflnas.bench.summary import markdown_table, quality_entry, summarize
from pflnas.cli.bench_args import (
    DEFAULT_PRESET,
    add_nb201_arguments,
    check_counts,
    check_flags,
    oneshot_config,
    selection_spec,
    selection_specs,
    strategies,
)
from pflnas.cli.paths import check_out_folder
from pflnas.rundir import claim_new
from pflnas.utils_io import atomic_write_json, atomic_write_text

__all__ = ["DEFAULT_PRESET", "add_parser", "run_nb201"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench")
    benches = p.add_subparsers(dest="bench", metavar="BENCH")
    benches.required = True
    nb = benches.add_parser(
        "nb201",
        help="run strategies on the nb201 space, scored by NAS-Bench-201's CIFAR-10 test accuracies",
        description="Multi-trial strategies (evolution, random) query --queries cells per seed and select "
        "on --selection (default zero-cost; never the test accuracy unless --selection oracle); the table "
        "only reports the test accuracy of the cell they select. One-shot strategies (darts, gdas, ...) run "
        f"a real search on nb201 per seed (default budget: --preset {DEFAULT_PRESET}) and the table scores "
        "the cell they found. --op-wins reports the table's own ground truth (no search). Needs the extra "
        "'bench': pip install 'pflnas[bench]'.",
    )
    add_nb201_arguments(nb)
    nb.set_defaults(run=run_nb201)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _log_seed(name: str, result: dict[str, Any]) -> None:
    budget = f"{result['queries']} queries" if "queries" in result else f"{result['epochs']} epochs"
    _log(
        f"{name} seed {result['seed']}: accuracy {result['accuracy']:.2f}  regret {result['regret']:.2f}  "
        f"parameter-free share {_fmt(result['param_free_share'])}"
        f"  ({budget}, {result['wall_time_s']:.1f} s)  {result['cell']}"
    )


def _multitrial_plan(args: argparse.Namespace, strategy: str, factory: SignalFactory) -> MultiTrialPlan:
    return MultiTrialPlan(
        strategy, args.queries or 100, factory.settings(), args.population, args.sample_size
    )


def _bench_multitrial(
    args: argparse.Namespace, table: NB201Table, strategy: str, factory: SignalFactory
) -> tuple[dict, list[dict]]:
    """Run (or reuse) every seed of one multi-trial strategy with one selection."""
    plan = _multitrial_plan(args, strategy, factory)
    settings, results = plan.settings(table), []
    for seed in range(args.seeds):
        path = seed_file(args.out, strategy, seed, plan.selection)
        result = finished_seed(path, settings, args.overwrite)
        if result is None:
            try:
                result = run_multitrial_seed(table, plan, seed, factory.for_seed(seed))
            finally:
                factory.close()  # keep the zero-cost scores computed so far, even when interrupted
            save_seed(path, settings, result)
        else:
            _log(f"{strategy} ({plan.selection}) seed {seed}: reusing {path}")
        _log_seed(f"{strategy} ({plan.selection})", result)
        results.append(result)
    return settings, results


def _bench_oneshot(args: argparse.Namespace, table: NB201Table, strategy: str) -> tuple[dict, list[dict]]:
    """Run (or reuse) every seed of one one-shot strategy."""
    settings: dict[str, Any] = {}
    results = []
    for seed in range(args.seeds):
        cfg = oneshot_config(args, strategy, seed)
        settings = oneshot_settings(cfg, table)
        path = seed_file(args.out, strategy, seed)
        result = finished_seed(path, settings, args.overwrite)
        if result is None:
            with contextlib.redirect_stdout(sys.stderr):  # the search's epoch lines; stdout is the result
                result = run_oneshot_seed(table, cfg, args.out / strategy / f"seed{seed}")
            save_seed(path, settings, result)
        else:
            _log(f"{strategy} seed {seed}: reusing {path}")
        _log_seed(strategy, result)
        results.append(result)
    return settings, results


def _pending(
    args: argparse.Namespace, table: NB201Table, names: list[str], factories: dict[str, SignalFactory]
) -> list[Job]:
    """The seeds with no stored result yet (one stored with other settings is an error unless
    --overwrite), seed by seed across strategies, so a bench cut short has as many seeds of each. Oracle
    seeds are look-ups and stay in this process."""
    jobs: list[Job] = []
    for seed in range(args.seeds):
        for name in names:
            if name not in MULTI_TRIAL:
                cfg = oneshot_config(args, name, seed)
                settings = oneshot_settings(cfg, table)
                path = seed_file(args.out, name, seed)
                if finished_seed(path, settings, args.overwrite) is None:
                    jobs.append(OneShotJob(cfg, args.out / name / f"seed{seed}", path, settings))
                continue
            for selection, factory in factories.items():
                if selection == "oracle":
                    continue
                plan = _multitrial_plan(args, name, factory)
                path = seed_file(args.out, name, seed, selection)
                if finished_seed(path, plan.settings(table), args.overwrite) is None:
                    jobs.append(MultiTrialJob(plan, factory.spec, seed, path, plan.settings(table)))
    return jobs


def _report(table: NB201Table, summaries: list[dict], quality: dict | None) -> dict[str, Any]:
    stats = table.stats(0.01)
    best_arch, best = table.best()
    report: dict[str, Any] = {
        "benchmark": "nb201",
        "table": {
            "source": "analog-nasbench",
            "metric": table.metric,
            "dataset": "cifar10 (test)",
            "best_cell": {"cell": nb201_string(best_arch), "accuracy": best},
            **stats.to_dict(),
        },
        "strategies": summaries,
    }
    if any("signal_quality" in s for s in summaries):
        report["zero_cost_quality"] = quality_entry(quality)
    return report


def run_nb201(args: argparse.Namespace) -> int:
    names = strategies(args)
    check_counts(args)
    specs = selection_specs(args, names)
    check_flags(args, names, specs)
    check_out_folder(args.out, "--out")
    with claim_new(args.out, "bench", reuse=True):  # continued in place; locked while it runs
        return _bench_nb201(args, names, specs)


def _bench_nb201(args: argparse.Namespace, names: list[str], specs: list[Any]) -> int:
    if args.op_wins:
        return _run_op_wins(args)
    for name in names:  # a bad one-shot config fails before any seed runs
        if name not in MULTI_TRIAL:
            oneshot_config(args, name, 0)
    table = load_nb201_table()
    factories = {spec.name: SignalFactory(spec, table) for spec in specs}  # missing data fails here
    quality = _zero_cost_quality(args, table, factories)
    if not names:
        return _print_quality(args, quality)
    if args.jobs > 1:
        run_jobs(_pending(args, table, names, factories), args.jobs, _log, data_dir=args.data_dir)
    summaries = []
    stats = table.stats(0.01)
    for name in names:
        if name in MULTI_TRIAL:
            runs = [(_bench_multitrial(args, table, name, f), f) for f in factories.values()]
        else:
            runs = [(_bench_oneshot(args, table, name), None)]
        for (settings, results), factory in runs:
            q = factory.quality() if factory is not None else None
            summary = summarize(table, settings, results, stats, q)
            folder = args.out / name / (factory.spec.name if factory is not None else "")
            atomic_write_json(folder / "summary.json", summary)
            summaries.append(summary)
    return _write_report(args, table, summaries, quality)


def _write_report(
    args: argparse.Namespace, table: NB201Table, summaries: list[dict], quality: dict | None
) -> int:
    report = _report(table, summaries, quality)
    text = markdown_table(summaries, table, table.stats(0.01))
    atomic_write_json(args.out / "summary.json", report)
    atomic_write_text(args.out / "summary.md", text)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(text, end="")
        _log(
            f"results: {args.out / 'summary.json'}, {args.out / 'summary.md'} (one file per seed in "
            f"{args.out}/<strategy>/)"
        )
    return 0


def _zero_cost_quality(
    args: argparse.Namespace, table: NB201Table, factories: dict[str, SignalFactory]
) -> dict[str, Any] | None:
    """Measure the zero-cost signal's Kendall tau when asked (cached); else the stored value, if any."""
    factory = factories.get("zero-cost")
    if args.zero_cost_quality:
        from pflnas.bench.zero_cost import signal_quality

        factory = factory or SignalFactory(selection_spec(args, "zero-cost"), table)
        assert factory.scorer is not None
        return signal_quality(factory.scorer, log=_log)
    return factory.quality() if factory is not None else None


def _print_quality(args: argparse.Namespace, quality: dict[str, Any] | None) -> int:
    entry = quality_entry(quality)
    atomic_write_json(args.out / "zero_cost_quality.json", entry)
    if args.json:
        print(json.dumps(entry, indent=2))
    else:
        from pflnas.bench.summary import quality_line

        print(quality_line(entry))
    return 0


def _run_op_wins(args: argparse.Namespace) -> int:
    from pflnas.bench.ground_truth import ground_truth_markdown, write_ground_truth

    report = write_ground_truth(load_nb201_table(), args.out)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(ground_truth_markdown(report), end="")
        _log(f"results in {args.out}: op_wins.json, op_wins.md, op_wins.png/.svg, pareto.png/.svg")
    return 0
