"""The flags of ``pflnas bench nb201`` and their checks: every bad combination is one line naming the flag and
the fix, before anything is loaded or run."""

from __future__ import annotations

import argparse
from pathlib import Path

from pflnas.bench.runner import MULTI_TRIAL, REFUSED
from pflnas.bench.selection import DEFAULT_SELECTION, SELECTIONS, ProxyConfig, SelectionSpec
from pflnas.bench.zero_cost import ZeroCostConfig
from pflnas.cli.cmd_search import flags_given
from pflnas.config.build import build_search_config
from pflnas.config.limits import check_grid_size
from pflnas.config.search import SearchConfig
from pflnas.errors import ConfigError
from pflnas.names import name_hint

DEFAULT_PRESET = "quick"  # one-shot default budget: a CIFAR-10 subset of 800, 3 epochs, C=8 (minutes on CPU)
ONESHOT_FLAGS = {"epochs": "run.epochs", "data_dir": "data.data_dir", "device": "run.device"}
FIXED_KEYS = ("space.name", "strategy.name", "run.seed")  # set by the bench itself
PROXY_FLAGS = {  # flag -> (ProxyConfig field, what it sets)
    "proxy_epochs": ("epochs", "training epochs per queried cell"),
    "proxy_subset": ("subset", "CIFAR-10 training images used: half train the cell, half score it"),
    "proxy_channels": ("init_channels", "network width C"),
    "proxy_layers": ("layers", "cells per stage"),
    "proxy_batch_size": ("batch_size", "training batch size"),
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def add_nb201_arguments(nb: argparse.ArgumentParser) -> None:
    nb.add_argument(
        "--strategy",
        action="append",
        help="strategy name; repeat or comma-separate for several (evolution, random, darts, gdas, ...; "
        "default: none, so give one unless --op-wins or --zero-cost-quality)",
    )
    nb.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 per strategy (default 10)")
    nb.add_argument("--queries", type=int, help="multi-trial: cells queried per seed (default 100)")
    nb.add_argument("--population", type=int, default=10, help="evolution: population (default 10)")
    nb.add_argument("--sample-size", type=int, default=3, help="evolution: tournament size (default 3)")
    nb.add_argument(
        "--selection",
        action="append",
        metavar="|".join(SELECTIONS),
        help=f"multi-trial: what a seed selects on (default {DEFAULT_SELECTION}); repeat or comma-separate "
        "for several. zero-cost: NASWOT of the untrained cell on CIFAR-10 training images; proxy: held-out "
        "accuracy after a short training; oracle: the table's test accuracy (labelled 'selected on test')",
    )
    nb.add_argument(
        "--zero-cost-quality",
        action="store_true",
        help="measure the zero-cost signal's Kendall tau against the table over a fixed sample of 1000 "
        "cells (minutes; cached under $PFLNAS_CACHE)",
    )
    nb.add_argument("--zero-cost-batch", type=int, help="zero-cost: training images per score (default 32)")
    for dest, (field, what) in PROXY_FLAGS.items():
        default = getattr(ProxyConfig(), field)
        nb.add_argument(_flag(dest), type=int, help=f"proxy: {what} (default {default})")
    nb.add_argument(
        "--op-wins",
        action="store_true",
        help="no search: per edge, how often the best parameter-free op beats the best trainable op over all "
        "contexts, and the parameter-free share of the accuracy-vs-parameters Pareto front (JSON, Markdown, "
        "figures in --out)",
    )
    nb.add_argument("--epochs", type=int, help="one-shot: search epochs per seed (default: the preset's)")
    nb.add_argument("--preset", help=f"one-shot: search preset (default {DEFAULT_PRESET})")
    nb.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="one-shot: search config override"
    )
    nb.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="seeds run at once in separate processes (default 1): one-shot searches, and zero-cost or "
        "proxy multi-trial seeds; on CPU the cores are split between them",
    )
    nb.add_argument("--data-dir", help="where CIFAR-10 is (default: $PFLNAS_DATA, else the cache dir)")
    nb.add_argument("--device", help="one-shot and proxy: auto, cpu, cuda or cuda:N (default: auto)")
    nb.add_argument("--out", type=Path, default=Path("runs/bench-nb201"), help="default: runs/bench-nb201")
    nb.add_argument("--overwrite", action="store_true", help="redo seeds stored with other settings")
    nb.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


def strategies(args: argparse.Namespace) -> list[str]:
    from pflnas.strategies import list_strategies

    names = [n.strip() for item in args.strategy or () for n in item.split(",") if n.strip()]
    known = sorted(set(list_strategies()) | set(MULTI_TRIAL))
    for name in names:
        if name in REFUSED:
            raise ConfigError(REFUSED[name])
        if name not in known:
            hint = name_hint(name, known)
            raise ConfigError(f"unknown strategy {name!r}{hint}; pflnas bench nb201 runs: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--strategy names a strategy twice: {', '.join(names)}")
    return names


def selection_specs(args: argparse.Namespace, names: list[str]) -> list[SelectionSpec]:
    """The selections the multi-trial strategies run with (none without a multi-trial strategy)."""
    given = [n.strip() for item in args.selection or () for n in item.split(",") if n.strip()]
    if given and not any(n in MULTI_TRIAL for n in names):
        raise ConfigError(
            "--selection chooses what multi-trial strategies (evolution, random) select on; one-shot "
            "strategies select with their own search: drop --selection or add --strategy evolution|random"
        )
    if len(set(given)) != len(given):
        raise ConfigError(f"--selection names a selection twice: {', '.join(given)}")
    chosen = given or ([DEFAULT_SELECTION] if any(n in MULTI_TRIAL for n in names) else [])
    return [selection_spec(args, name) for name in chosen]


def selection_spec(args: argparse.Namespace, name: str) -> SelectionSpec:
    """The selection ``name`` with the budgets the flags give (the defaults otherwise)."""
    given = {dest: getattr(args, dest) for dest in PROXY_FLAGS if getattr(args, dest) is not None}
    proxy = {PROXY_FLAGS[dest][0]: value for dest, value in given.items()}
    zero_cost = (
        ZeroCostConfig() if args.zero_cost_batch is None else ZeroCostConfig(batch_size=args.zero_cost_batch)
    )
    return SelectionSpec(
        name, zero_cost, ProxyConfig(**proxy), data_dir=args.data_dir, device=args.device or "auto"
    )


def check_flags(args: argparse.Namespace, names: list[str], specs: list[SelectionSpec]) -> None:
    """Flags that nothing in this command reads, or that contradict each other (after
    :func:`check_counts`)."""
    if args.op_wins and (names or args.zero_cost_quality):
        raise ConfigError(
            "--op-wins reads the table alone; run it without --strategy and --zero-cost-quality"
        )
    if not (names or args.op_wins or args.zero_cost_quality):
        raise ConfigError(
            "name at least one --strategy (evolution, random, darts, ...), or use --op-wins or "
            "--zero-cost-quality for the table's ground truth"
        )
    multi = [n for n in names if n in MULTI_TRIAL]
    oneshot = [n for n in names if n not in MULTI_TRIAL]
    if not multi and args.queries is not None:
        raise ConfigError(
            "--queries is the budget of multi-trial strategies (evolution, random); "
            "one-shot strategies take --epochs"
        )
    selected = {s.name for s in specs}
    uses = {  # flag -> whether something in this command uses it
        "epochs": bool(oneshot),
        "preset": bool(oneshot),
        "set": bool(oneshot),
        "device": bool(oneshot) or "proxy" in selected,
        "data_dir": bool(oneshot) or bool(selected - {"oracle"}) or args.zero_cost_quality,
        "zero_cost_batch": "zero-cost" in selected or args.zero_cost_quality,
        **{dest: "proxy" in selected for dest in PROXY_FLAGS},
    }
    for dest, used in uses.items():
        if getattr(args, dest) not in (None, []) and not used:
            raise ConfigError(f"{_flag(dest)} does not apply here: {_why_unused(dest)}")
    for item in args.set:
        key = item.partition("=")[0]
        if key in FIXED_KEYS:
            raise ConfigError(f"--set {key} is fixed by the bench (use --strategy / --seeds)")


def _why_unused(dest: str) -> str:
    if dest in PROXY_FLAGS:
        return "it sets the budget of --selection proxy"
    if dest == "zero_cost_batch":
        return "it sets --selection zero-cost (or --zero-cost-quality)"
    if dest == "data_dir":
        return "it is read by one-shot searches and the zero-cost and proxy selections"
    if dest == "device":
        return "it is read by one-shot searches and --selection proxy"
    return "it configures one-shot searches; multi-trial strategies take --queries and --selection"


def check_counts(args: argparse.Namespace) -> None:
    """Every count flag in range (before any config is built from them)."""
    least = {"zero_cost_batch": 2, "proxy_subset": 2}  # a kernel of 2 images; a split with 2 sides
    for dest in ("seeds", "jobs", "queries", "population", "sample_size", "zero_cost_batch", *PROXY_FLAGS):
        value = getattr(args, dest)
        if value is not None and value < least.get(dest, 1):
            raise ConfigError(f"{_flag(dest)} must be >= {least.get(dest, 1)}, got {value}")
    if args.sample_size is not None and args.population is not None and args.sample_size > args.population:
        raise ConfigError(
            f"--sample-size {args.sample_size} is larger than --population {args.population}: a tournament "
            "samples from the population; lower --sample-size or raise --population"
        )
    check_grid_size("searches", seeds=args.seeds or 1, strategies=max(1, len(args.strategy or ())))


def oneshot_config(args: argparse.Namespace, strategy: str, seed: int) -> SearchConfig:
    """The search config of one one-shot seed, built as ``pflnas search`` builds it."""
    from pflnas.device import resolve_device
    from pflnas.spaces import resolve_space

    fixed = {"space.name": "nb201", "strategy.name": strategy, "run.seed": seed}
    cfg = build_search_config(
        preset=args.preset or DEFAULT_PRESET,
        flags={**fixed, **flags_given(args, ONESHOT_FLAGS)},
        sets=args.set,
    )
    resolve_device(cfg.run.device)  # --device cuda without a GPU: one line now, not one per seed later
    space = resolve_space(cfg.space)
    if len(space.alpha_groups()) != 1:
        raise ConfigError(
            "NAS-Bench-201 repeats one cell through the network; search with space.alpha_mode=shared"
        )
    return cfg
