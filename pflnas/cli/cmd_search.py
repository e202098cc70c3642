"""``pflnas search``: run a supernet search and write found.json."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import yaml

from pflnas.configs import SearchConfig, build_config, preset_path, read_yaml, validate_search_config
from pflnas.errors import ConfigError
from pflnas.strategies import list_strategies
from pflnas.train.search import CONFIG, FOUND, SearchRun, resolve_space

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
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search an architecture in a supernet; writes found.json")
    p.add_argument("--space", help="search space name (cell_v1, darts, nb201) or YAML path")
    p.add_argument("--strategy", help=f"search strategy: {', '.join(list_strategies())}")
    p.add_argument("--dataset", help="cifar10 or fashion-mnist")
    p.add_argument("--data-dir", help="where the dataset is (else $PFLNAS_DATA, else the cache dir)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", action="store_const", const=True, help="bf16 autocast")
    p.add_argument("--channels-last", action="store_const", const=True)
    p.add_argument("--out", help="run directory (default: runs/search-<space>-<strategy>-<time>)")
    p.add_argument("--config", help="YAML config file (sections: space, data, weights, arch, strategy, run)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. run.epochs=10"
    )
    p.add_argument("--preset", help="named preset: quick (a few minutes on CPU), darts (the DARTS protocol)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out directory")
    p.set_defaults(run=run)


def flag_overrides(args: argparse.Namespace, keys: dict[str, str]) -> list[str]:
    """``--set``-style overrides for the flags that were given (a flag left unset overrides nothing)."""
    out = []
    for attr, key in keys.items():
        value = getattr(args, attr)
        if value is not None:
            out.append(
                f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
            )
    return out


def _config_from_args(args: argparse.Namespace) -> SearchConfig:
    layers = []
    if args.preset:
        layers.append(read_yaml(preset_path(args.preset)))
    if args.config:
        layers.append(read_yaml(args.config))
    cfg = build_config(SearchConfig, layers, flag_overrides(args, FLAG_KEYS) + list(args.set))
    validate_search_config(cfg)
    return cfg


def _resume_config(args: argparse.Namespace) -> tuple[SearchConfig, Path]:
    run_dir = Path(args.resume)
    given = [f"--{a.replace('_', '-')}" for a in (*FLAG_KEYS, "config", "preset", "out") if getattr(args, a)]
    if given or args.set:
        raise ConfigError(
            "--resume continues a run with its own config; "
            f"drop {', '.join(given + ['--set'] * bool(args.set))}"
        )
    if not (run_dir / CONFIG).is_file():
        raise ConfigError(f"{run_dir} is not a pflnas search run directory (no {CONFIG})")
    data = read_yaml(run_dir / CONFIG)
    data.pop("resolved_space", None)
    cfg = build_config(SearchConfig, [data])
    validate_search_config(cfg)
    return cfg, run_dir


def check_out_dir(path: Path, overwrite: bool, create: bool = True) -> None:
    """Refuse a non-empty run directory unless ``overwrite``; create it and prove it is writable."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ConfigError(
            f"--out {path} is not empty; use --resume {path} to continue it or --overwrite to reuse it"
        )
    if not create:
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".pflnas-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot write to --out {path} ({exc.strerror}); choose another directory"
        ) from None


def run(args: argparse.Namespace) -> int:
    if args.resume:
        cfg, run_dir = _resume_config(args)
    else:
        cfg = _config_from_args(args)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(args.out or f"runs/search-{cfg.space.name}-{cfg.strategy.name}-{stamp}")
        resolve_space(cfg)  # fail on a bad space before touching the disk
        check_out_dir(run_dir, args.overwrite)
    arch = SearchRun(cfg, run_dir).run(resume=bool(args.resume))
    share = arch.param_free_share()
    print(f"found architecture: {run_dir / FOUND}  (parameter-free share of kept ops: {share:.2f})")
    return 0
