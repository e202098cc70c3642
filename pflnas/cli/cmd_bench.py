"""``pflnas bench nb201``: search strategies scored against NAS-Bench-201 ground truth."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from pflnas.bench.nb201 import NB201Table, load_nb201_table, nb201_string
from pflnas.bench.runner import (
    MULTI_TRIAL,
    REFUSED,
    MultiTrialPlan,
    OneShotJob,
    finished_seed,
    markdown_table,
    oneshot_settings,
    run_multitrial_seed,
    run_oneshot_jobs,
    run_oneshot_seed,
    save_seed,
    seed_file,
    summarize,
)
from pflnas.cli.cmd_search import flag_overrides
from pflnas.cli.paths import check_out_folder
from pflnas.configs import (
    SearchConfig,
    build_config,
    preset_path,
    read_yaml,
    validate_search_config,
)
from pflnas.errors import ConfigError
from pflnas.train.device import resolve_device
from pflnas.train.search import resolve_space
from pflnas.utils_io import atomic_write_json, atomic_write_text

DEFAULT_PRESET = "quick"  # one-shot default budget: a CIFAR-10 subset of 800, 3 epochs, C=8 (minutes on CPU)
ONESHOT_FLAGS = {"epochs": "run.epochs", "data_dir": "data.data_dir", "device": "run.device"}
FIXED_KEYS = ("space.name", "strategy.name", "run.seed")  # set by the bench itself


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="score search strategies against ground truth (NAS-Bench-201)")
    benches = p.add_subparsers(dest="bench", metavar="BENCH")
    benches.required = True
    nb = benches.add_parser(
        "nb201",
        help="run strategies on the nb201 space, scored by NAS-Bench-201's CIFAR-10 test accuracies",
        description="Multi-trial strategies (evolution, random) query the table for --queries cells per "
        "seed; one-shot strategies (darts, gdas, ...) run a real search on nb201 per seed (default budget: "
        f"--preset {DEFAULT_PRESET}) and the table scores the cell they found. Needs the extra 'bench': "
        "pip install 'pflnas[bench]'.",
    )
    nb.add_argument(
        "--strategy",
        action="append",
        required=True,
        help="strategy name; repeat or comma-separate for several (evolution, random, darts, gdas, ...)",
    )
    nb.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 per strategy (default 10)")
    nb.add_argument("--queries", type=int, help="multi-trial: table queries per seed (default 100)")
    nb.add_argument("--population", type=int, default=10, help="evolution: population (default 10)")
    nb.add_argument("--sample-size", type=int, default=3, help="evolution: tournament size (default 3)")
    nb.add_argument("--epochs", type=int, help="one-shot: search epochs per seed")
    nb.add_argument("--preset", help=f"one-shot: search preset (default {DEFAULT_PRESET})")
    nb.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="one-shot: search config override"
    )
    nb.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="one-shot: seeds searched at once in separate processes (default 1); several launch-bound "
        "searches share one GPU well; on CPU the cores are split between them",
    )
    nb.add_argument("--data-dir", help="one-shot: where CIFAR-10 is (else $PFLNAS_DATA, else the cache dir)")
    nb.add_argument("--device", help="one-shot: auto, cpu, cuda or cuda:N")
    nb.add_argument("--out", type=Path, default=Path("runs/bench-nb201"), help="default: runs/bench-nb201")
    nb.add_argument("--overwrite", action="store_true", help="redo seeds stored with other settings")
    nb.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    nb.set_defaults(run=run_nb201)


def _strategies(args: argparse.Namespace) -> list[str]:
    from pflnas.strategies import list_strategies

    names = [n.strip() for item in args.strategy for n in item.split(",") if n.strip()]
    known = sorted(set(list_strategies()) | set(MULTI_TRIAL))
    for name in names:
        if name in REFUSED:
            raise ConfigError(REFUSED[name])
        if name not in known:
            raise ConfigError(f"unknown strategy {name!r}; pflnas bench nb201 runs: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--strategy names a strategy twice: {', '.join(names)}")
    return names


def _check_flags(args: argparse.Namespace, names: list[str]) -> None:
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    for flag in ("queries", "population", "sample_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    multi = [n for n in names if n in MULTI_TRIAL]
    oneshot = [n for n in names if n not in MULTI_TRIAL]
    if not multi and args.queries is not None:
        raise ConfigError(
            "--queries is the budget of multi-trial strategies (evolution, random); "
            "one-shot strategies take --epochs"
        )
    given = [f"--{f.replace('_', '-')}" for f in (*ONESHOT_FLAGS, "preset") if getattr(args, f) is not None]
    if not oneshot and (given or args.set):
        raise ConfigError(
            f"{', '.join(given + ['--set'] * bool(args.set))} configure one-shot searches; "
            "multi-trial strategies take --queries"
        )
    for item in args.set:
        key = item.partition("=")[0]
        if key in FIXED_KEYS:
            raise ConfigError(f"--set {key} is fixed by the bench (use --strategy / --seeds)")


def oneshot_config(args: argparse.Namespace, strategy: str, seed: int) -> SearchConfig:
    """The search config of one one-shot seed, built as ``pflnas search`` builds it."""
    layers = [read_yaml(preset_path(args.preset or DEFAULT_PRESET))]
    fixed = ["space.name=nb201", f"strategy.name={strategy}", f"run.seed={seed}"]
    cfg = build_config(SearchConfig, layers, fixed + flag_overrides(args, ONESHOT_FLAGS) + list(args.set))
    validate_search_config(cfg)
    resolve_device(cfg.run.device)  # --device cuda without a GPU: one line now, not one per seed later
    space = resolve_space(cfg)
    if len(space.alpha_groups()) != 1:
        raise ConfigError(
            "NAS-Bench-201 repeats one cell through the network; search with space.alpha_mode=shared"
        )
    return cfg


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _bench_strategy(args: argparse.Namespace, table: NB201Table, strategy: str) -> tuple[dict, list[dict]]:
    """Run (or reuse) every seed of one strategy; returns its settings and per-seed results."""
    results: list[dict[str, Any]] = []
    settings: dict[str, Any] = {}
    for seed in range(args.seeds):
        path = seed_file(args.out, strategy, seed)
        if strategy in MULTI_TRIAL:
            plan = MultiTrialPlan(strategy, args.queries or 100, args.population, args.sample_size)
            settings = plan.settings(table)
            result = finished_seed(path, settings, args.overwrite)
            if result is None:
                result = run_multitrial_seed(table, plan, seed)
                save_seed(path, settings, result)
            else:
                _log(f"{strategy} seed {seed}: reusing {path}")
        else:
            cfg = oneshot_config(args, strategy, seed)
            settings = oneshot_settings(cfg, table)
            result = finished_seed(path, settings, args.overwrite)
            if result is None:
                with contextlib.redirect_stdout(sys.stderr):  # the search's epoch lines; stdout is the result
                    result = run_oneshot_seed(table, cfg, args.out / strategy / f"seed{seed}")
                save_seed(path, settings, result)
            else:
                _log(f"{strategy} seed {seed}: reusing {path}")
        budget = f"{result['queries']} queries" if "queries" in result else f"{result['epochs']} epochs"
        _log(
            f"{strategy} seed {seed}: accuracy {result['accuracy']:.2f}  regret {result['regret']:.2f}  "
            f"parameter-free share {_fmt(result['param_free_share'])}"
            f"  ({budget}, {result['wall_time_s']:.1f} s)  {result['cell']}"
        )
        results.append(result)
    return settings, results


def _pending_oneshot(args: argparse.Namespace, table: NB201Table, names: list[str]) -> list[OneShotJob]:
    """The one-shot seeds with no stored result yet (a stored one made with other settings is an error
    unless --overwrite), seed by seed across strategies, so a bench cut short has as many seeds of each."""
    jobs = []
    for seed in range(args.seeds):
        for name in names:
            if name in MULTI_TRIAL:
                continue
            cfg = oneshot_config(args, name, seed)
            settings = oneshot_settings(cfg, table)
            path = seed_file(args.out, name, seed)
            if finished_seed(path, settings, args.overwrite) is None:
                jobs.append(OneShotJob(cfg, args.out / name / f"seed{seed}", path, settings))
    return jobs


def run_nb201(args: argparse.Namespace) -> int:
    names = _strategies(args)
    _check_flags(args, names)
    check_out_folder(args.out, "--out")
    for name in names:  # a bad one-shot config fails before any seed runs
        if name not in MULTI_TRIAL:
            oneshot_config(args, name, 0)
    table = load_nb201_table()
    stats = table.stats(0.01)
    if args.jobs > 1:
        run_oneshot_jobs(_pending_oneshot(args, table, names), args.jobs, _log)
    summaries = []
    for name in names:
        settings, results = _bench_strategy(args, table, name)
        summary = summarize(table, settings, results, stats)
        atomic_write_json(args.out / name / "summary.json", summary)
        summaries.append(summary)
    best_arch, best = table.best()
    report = {
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
    text = markdown_table(summaries, table, stats)
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
