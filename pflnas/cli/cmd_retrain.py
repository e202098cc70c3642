"""``pflnas retrain``: train a found architecture from scratch under a recipe (single process or torchrun)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
from pathlib import Path

from pflnas.arch.record import load_architecture
from pflnas.cli.cmd_search import flags_given
from pflnas.config.loader import build_config, read_yaml
from pflnas.errors import ConfigError
from pflnas.options import DATASET_PRESETS
from pflnas.rundir import check_new, check_resume, claim_new, claim_resume
from pflnas.train.layout import CONFIG
from pflnas.train.recipe import RetrainConfig, list_recipes, recipe_layer, validate_retrain_config

FLAG_KEYS = {
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "epochs": "schedule.epochs",
    "batch_size": "data.batch_size",
    "lr": "optim.lr",
    "device": "run.device",
    "amp": "run.amp",
    "channels_last": "run.channels_last",
    "compile": "run.compile",
}
RUN_FILES = f"{CONFIG} with a network section beside arch.json"  # a retrain run from before markers


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrain", epilog="'pflnas list recipes' says what each recipe is")
    p.add_argument(
        "--arch",
        metavar="FILE",
        help="required (unless --resume): found.json, or any pflnas architecture file",
    )
    p.add_argument(
        "--recipe",
        metavar="NAME",
        help=f"recipe name ({', '.join(list_recipes())}) or YAML path (default: cifar10_darts, "
        "imagenet_darts_mobile with --dataset imagenet)",
    )
    p.add_argument("--dataset", help=f"{', '.join(DATASET_PRESETS)} (default: the recipe's)")
    p.add_argument(
        "--data-dir", metavar="DIR", help="where the dataset is (default: $PFLNAS_DATA, else the cache dir)"
    )
    p.add_argument("--epochs", type=int, metavar="N", help="training epochs (default: the recipe's)")
    p.add_argument(
        "--batch-size", type=int, metavar="N", help="global batch size, all processes (default: the recipe's)"
    )
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument(
        "--amp", choices=["bf16", "fp16", "none"], help="default: the recipe's, else bf16 on GPU, none on CPU"
    )
    p.add_argument("--channels-last", action="store_const", const=True, help="channels-last memory format")
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile the model")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/retrain-<arch>-<time>)")
    p.add_argument(
        "--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint (default: none)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace the pflnas retrain run already in --out")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override, e.g. optim.lr=0.05"
    )
    p.set_defaults(run=run)


def _default_recipe(args: argparse.Namespace) -> str:
    return "imagenet_darts_mobile" if args.dataset == "imagenet" else "cifar10_darts"


def _config(args: argparse.Namespace) -> RetrainConfig:
    cfg = build_config(
        RetrainConfig,
        [recipe_layer(args.recipe or _default_recipe(args))],
        args.set,
        typed=flags_given(args, FLAG_KEYS),
    )
    validate_retrain_config(cfg)
    return cfg


def run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as held:  # the run directory's lock, released when the command ends
        return _run(args, held)


def _run(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun rank 0 alone writes, so it alone locks
    if args.resume:
        given = [
            f"--{a.replace('_', '-')}" for a in (*FLAG_KEYS, "recipe", "out", "arch") if getattr(args, a)
        ]
        if given or args.set:
            raise ConfigError(
                f"--resume continues a run with its own config and architecture; drop {' '.join(given)}"
            )
        run_dir = Path(args.resume)
        check_resume(run_dir, "retrain", RUN_FILES)
        if not (run_dir / CONFIG).is_file() or not (run_dir / "arch.json").is_file():
            raise ConfigError(
                f"{run_dir} has no {CONFIG} or arch.json: the run stopped before it began; start it again "
                f"with --out {run_dir} --overwrite"
            )
        if main:
            held.enter_context(claim_resume(run_dir, "retrain", RUN_FILES))
        data = read_yaml(run_dir / CONFIG)
        data.pop("network", None)
        cfg = build_config(RetrainConfig, [data])
        validate_retrain_config(cfg)
        arch = load_architecture(run_dir / "arch.json")
    else:
        if not args.arch:
            raise ConfigError("--arch FILE is required (a found.json from 'pflnas search')")
        arch = load_architecture(args.arch)
        cfg = _config(args)
        if args.out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(
                "with torchrun, give --out so that every process writes to the same run directory"
            )
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(args.out or f"runs/retrain-{Path(args.arch).stem}-{stamp}")
        if main:
            held.enter_context(claim_new(run_dir, "retrain", reuse=args.overwrite, again="--resume"))
        else:
            check_new(run_dir, "retrain", reuse=args.overwrite, again="--resume")
    from pflnas.train.distributed import init_distributed, shutdown  # torch loads once the flags are checked
    from pflnas.train.retrain import RetrainRun

    info = init_distributed(cfg.run.device)
    try:
        result = RetrainRun(cfg, arch, run_dir, info).run(resume=bool(args.resume))
    finally:
        shutdown(info)
    if info.is_main:
        top1, top5 = result["top1"], result["top5"]
        epochs = f"{result['epochs']} epoch{'s' if result['epochs'] != 1 else ''}"
        print(f"retrained: top-1 {top1:.4f}, top-5 {top5:.4f}, {epochs}; run in {run_dir}")
    return 0
