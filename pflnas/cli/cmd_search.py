"""``pflnas search``: run a supernet search and write found.json.

The flags become a config through :func:`pflnas.config.build.build_search_config`, the builder the study
runner uses too; this module adds what only a command line has: run directories, locks, ``--resume``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
from pathlib import Path

from pflnas.arch.chance import chance_share
from pflnas.arch.record import Architecture
from pflnas.cli.search_group import SEED_FIELD, group_dirs, run_group
from pflnas.config.build import build_search_config
from pflnas.config.loader import build_config, read_yaml
from pflnas.config.presets import list_presets, preset_path
from pflnas.config.search import SearchConfig
from pflnas.config.validate import validate_search_config
from pflnas.errors import ConfigError
from pflnas.parsing import parse_seeds
from pflnas.rundir import check_resume, claim_new, claim_resume
from pflnas.spaces import list_spaces, resolve_space
from pflnas.strategies import MULTI_TRIAL_STRATEGIES, describe_strategies
from pflnas.strategies.registry import check_strategy
from pflnas.train.group_rules import read_group
from pflnas.train.layout import CONFIG, FOUND, METRICS

# CLI flag -> config key; a flag left unset does not override the config
FLAG_KEYS = {
    "space": "space.name",
    "strategy": "strategy.name",
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "epochs": "run.epochs",
    "batch_size": "data.batch_size",
    "seed": "run.seed",
    "device": "run.device",
    "amp": "run.amp",
    "channels_last": "run.channels_last",
    "latency_weight": "latency.weight",
    "latency_device": "latency.device",
    "trials": "trials.n_trials",
    "storage": "trials.storage",
    "study": "trials.study",
}
RUN_FILES = f"{CONFIG} with resolved_space beside {METRICS}"  # what a search run from before markers holds


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = SearchConfig()  # the defaults a flag left unset keeps (a preset or --config may change them)
    p = sub.add_parser(
        "search",
        epilog="example: pflnas search --space cell_v1 --preset quick --out runs/quick  (a few minutes on a "
        "CPU); 'pflnas list' shows spaces, strategies and presets",
    )
    p.add_argument(
        "--space",
        metavar="NAME",
        help=f"required: a search space ({', '.join(list_spaces())}) or a space YAML path",
    )
    p.add_argument(
        "--strategy", help=f"search strategy ({describe_strategies()}) (default: {d.strategy.name})"
    )
    p.add_argument("--dataset", help=f"cifar10 or fashion-mnist (default: {d.data.dataset})")
    p.add_argument(
        "--data-dir", metavar="DIR", help="where the dataset is (default: $PFLNAS_DATA, else the cache dir)"
    )
    p.add_argument("--epochs", type=int, metavar="N", help=f"search epochs (default: {d.run.epochs})")
    p.add_argument(
        "--batch-size", type=int, metavar="N", help=f"global batch size (default: {d.data.batch_size})"
    )
    p.add_argument("--seed", type=int, metavar="N", help=f"random seed (default: {d.run.seed})")
    p.add_argument(
        "--seeds",
        metavar="LIST",
        help="several seeds' searches as one grouped network (darts, darts2, pcdarts on cell spaces), e.g. "
        "0-9 or 0,3,7; each seed gets the run directory --out names with {seed} in it (else OUT/seed<N>) "
        "and exactly what its --seed run would write (default: one seed, --seed)",
    )
    p.add_argument("--device", help=f"auto, cpu, cuda or cuda:N (default: {d.run.device})")
    p.add_argument("--amp", action="store_const", const=True, help="bf16 autocast")
    p.add_argument("--channels-last", action="store_const", const=True, help="channels-last memory format")
    _add_latency_and_trial_flags(p, d)
    _add_run_flags(p)
    p.set_defaults(run=run)


def _add_latency_and_trial_flags(p: argparse.ArgumentParser, d: SearchConfig) -> None:
    p.add_argument(
        "--latency-weight",
        type=float,
        metavar="LAMBDA",
        help="add LAMBDA x expected latency (ms, measured per op on --latency-device) to the architecture "
        f"loss of a differentiable strategy (default: {d.latency.weight:g}, off)",
    )
    p.add_argument(
        "--latency-device", help="cpu or cuda: where the per-op latency table is timed (default: --device)"
    )
    p.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help=f"multi-trial strategies: complete trials to run (default: {d.trials.n_trials})",
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help="multi-trial strategies: Optuna storage (journal file path, or URL such as postgresql://...) "
        "shared by every worker of the study (default: trials.journal in the run directory)",
    )
    p.add_argument(
        "--study",
        metavar="NAME",
        help="multi-trial strategies: study name (default: <space>-<strategy>-seed<seed>)",
    )


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """Where the run goes and what it is built from: --out, --config, --set, --preset, --resume."""
    p.add_argument(
        "--out",
        metavar="DIR",
        help="run directory; {seed} in it becomes the seed (default: runs/search-<space>-<strategy>-<time>)",
    )
    p.add_argument(
        "--config",
        metavar="FILE.yaml",
        help="YAML config file (sections: space, data, weights, arch, strategy, run; default: none)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, repeatable, e.g. run.epochs=10 or run.progress=false (default: none)",
    )
    p.add_argument(
        "--preset",
        metavar="NAME",
        help=f"named preset: {', '.join(list_presets())} ('pflnas list presets'; default: none, the DARTS "
        "protocol)",
    )
    p.add_argument(
        "--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint (default: none)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace the pflnas run already in --out")


def flags_given(args: argparse.Namespace, keys: dict[str, str]) -> dict[str, object]:
    """Config key -> typed value of the flags that were given (a flag left unset overrides nothing)."""
    return {key: getattr(args, attr) for attr, key in keys.items() if getattr(args, attr) is not None}


def _config_from_args(args: argparse.Namespace) -> SearchConfig:
    return build_search_config(
        preset=args.preset, config_file=args.config, flags=flags_given(args, FLAG_KEYS), sets=args.set
    )


def _check_space_named(args: argparse.Namespace) -> None:
    """A search starts only on a space the user chose: ``--space``, or a ``--config`` / ``--set`` / preset
    that names one. A preset that only sets a budget does not count: never a run on the default space by
    surprise. Checked after the other flags (their problems are named first), before torch loads."""
    if args.resume or args.space:
        return
    if any(item.partition("=")[0].strip() == "space.name" for item in args.set):
        return
    files = [f for f in (args.config, preset_path(args.preset) if args.preset else None) if f]
    if any("name" in (read_yaml(f).get("space") or {}) for f in files):
        return
    raise ConfigError(
        f"name a search space with --space NAME ({', '.join(list_spaces())}; 'pflnas list spaces' says "
        "what each is), e.g. pflnas search --space cell_v1 --preset quick --out runs/quick"
    )


def _resume_config(args: argparse.Namespace) -> tuple[SearchConfig, Path]:
    run_dir = Path(args.resume)
    given = [f"--{a.replace('_', '-')}" for a in (*FLAG_KEYS, "config", "preset", "out") if getattr(args, a)]
    if given or args.set:
        raise ConfigError(
            "--resume continues a run with its own config; "
            f"drop {', '.join(given + ['--set'] * bool(args.set))}"
        )
    check_resume(run_dir, "search", RUN_FILES)
    if not (run_dir / CONFIG).is_file():
        raise ConfigError(
            f"{run_dir} has no {CONFIG}: the run stopped before it began; start it again with "
            f"--out {run_dir} --overwrite"
        )
    data = read_yaml(run_dir / CONFIG)
    data.pop("resolved_space", None)
    data.pop("resolved_layout", None)  # what the strategy ran; the config's own space.layout stays
    data.pop("resolved_group", None)  # a grouped search's members: read_group
    cfg = build_config(SearchConfig, [data])
    validate_search_config(cfg)
    return cfg, run_dir


def run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as held:  # the run directory's lock, released when the command ends
        return _run(args, held)


def _run(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    if args.resume:
        cfg, run_dir = _resume_config(args)
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun rank 0 alone writes, so it alone locks
            held.enter_context(claim_resume(run_dir, "search", RUN_FILES))
    else:
        cfg = _config_from_args(args)
    space = resolve_space(cfg.space)  # once: a bad space fails before touching the disk
    seeds = _seeds(args, cfg)
    if cfg.strategy.name in MULTI_TRIAL_STRATEGIES:
        return _run_multi_trial(args, cfg, run_dir if args.resume else None, held)
    check_strategy(cfg.strategy.name)  # an unknown name: one line with the closest one
    if not args.resume:
        _check_space_named(args)  # the last check of the flags, before torch loads
    group = read_group(run_dir) if args.resume else None
    if seeds or group:
        members = group or (seeds, group_dirs(args.out, cfg, seeds))
        for arch, run_dir in run_group(cfg, space, members, held, args.resume, args.overwrite):
            _say_found(arch, run_dir, cfg.strategy.name)
        return 0
    from pflnas.train.dist_search import SearchSync  # torch loads here, once the flags are checked
    from pflnas.train.distributed import init_distributed, shutdown
    from pflnas.train.search import SearchRun

    info = init_distributed(cfg.run.device)  # under torchrun: this process's rank and device
    try:
        if not args.resume:  # rank 0 names, checks and claims the run directory; every rank gets its path
            run_dir = SearchSync(info).from_main(lambda: _new_run_dir(args, cfg, held))
        arch = SearchRun(cfg, run_dir, info, space).run(resume=bool(args.resume))
    finally:
        shutdown(info)
    if info.is_main:
        _say_found(arch, run_dir, cfg.strategy.name)
    return 0


def _seeds(args: argparse.Namespace, cfg: SearchConfig) -> list[int] | None:
    """``--seeds``, checked against the flags it cannot go with (before torch loads)."""
    if args.seeds is None:
        return None
    if args.resume:
        raise ConfigError("--resume continues a run with its own seeds; drop --seeds")
    if args.seed is not None:
        raise ConfigError("--seed and --seeds both name the seeds; give one of them")
    if cfg.strategy.name in MULTI_TRIAL_STRATEGIES:
        raise ConfigError(
            f"--seeds groups differentiable searches; {cfg.strategy.name!r} runs trials: start one search "
            "per seed with --seed"
        )
    return parse_seeds(args.seeds)


def _say_found(arch: Architecture, run_dir: Path, strategy: str) -> None:
    share, chance = arch.param_free_share(), chance_share(arch.space, strategy)
    print(
        f"found architecture: {run_dir / FOUND}  (parameter-free share of kept ops: {share:.2f}; "
        f"{chance:.2f} expected by chance)"
    )


def _run_multi_trial(
    args: argparse.Namespace, cfg: SearchConfig, run_dir: Path | None, held: contextlib.ExitStack
) -> int:
    """``--strategy evolution|nsga2|random``: one Optuna worker (see :mod:`pflnas.multitrial.driver`)."""
    from pflnas.multitrial.driver import MultiTrialRun  # imports Optuna only when needed

    if not args.resume:
        _check_space_named(args)

    run_dir = run_dir or _new_run_dir(args, cfg, held)
    arch = MultiTrialRun(cfg, run_dir).run(resume=bool(args.resume))
    _say_found(arch, run_dir, cfg.strategy.name)
    return 0


def _new_run_dir(args: argparse.Namespace, cfg: SearchConfig, held: contextlib.ExitStack) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out.replace(SEED_FIELD, str(cfg.run.seed)) if args.out else None  # as --seeds fills it in
    run_dir = Path(out or f"runs/search-{cfg.space.name}-{cfg.strategy.name}-{stamp}")
    held.enter_context(claim_new(run_dir, "search", reuse=args.overwrite, again="--resume"))
    return run_dir
