"""``pflnas evaluate``: top-1/top-5 of a retrained checkpoint on a dataset's evaluation split."""

from __future__ import annotations

import argparse
import json

from pflnas.arch.record import load_architecture
from pflnas.data.retrain import retrain_loaders
from pflnas.errors import PflnasError
from pflnas.models import NetworkConfig, build_from_config
from pflnas.train.checkpoint import load_checkpoint
from pflnas.train.distributed import init_distributed
from pflnas.train.retrain import evaluate


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="top-1/top-5 of a retrained checkpoint")
    p.add_argument("--arch", required=True, help="the architecture file the checkpoint was trained from")
    p.add_argument("--checkpoint", required=True, help="last.pt or best.pt of a 'pflnas retrain' run")
    p.add_argument("--dataset", help="default: the dataset the checkpoint was trained on")
    p.add_argument("--data-dir")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights stored in the checkpoint")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    arch = load_architecture(args.arch)
    state = load_checkpoint(args.checkpoint)
    if "network" not in state or "model" not in state:
        raise PflnasError(
            f"{args.checkpoint} is not a 'pflnas retrain' checkpoint (no network/model entries)"
        )
    net_cfg = NetworkConfig(**{**state["network"], "auxiliary": False})
    dataset = args.dataset or net_cfg.dataset
    info = init_distributed(args.device)
    data = retrain_loaders(
        dataset,
        args.data_dir,
        batch_size=args.batch_size,
        eval_batch_size=args.batch_size,
        device=info.device,
        seed=0,
        workers=4,
    )
    if data.num_classes != net_cfg.num_classes:
        raise PflnasError(
            f"{dataset} has {data.num_classes} classes but the checkpoint's network has {net_cfg.num_classes}"
        )
    model = build_from_config(arch, net_cfg).to(info.device)
    weights = state["model"]
    if args.ema:
        if not state.get("ema"):
            raise PflnasError(f"{args.checkpoint} holds no EMA weights (the run had run.ema=false)")
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items()}
    weights = {k: v for k, v in weights.items() if "auxiliary" not in k}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise PflnasError(f"{args.checkpoint} does not fit architecture {args.arch}: {first}") from None
    result = evaluate(model, data.eval, info, None)
    if args.json:
        print(
            json.dumps(
                {
                    "top1": result["top1"],
                    "top5": result["top5"],
                    "loss": result["loss"],
                    "images": result["count"],
                    "dataset": dataset,
                }
            )
        )
    else:
        print(
            f"top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  ({result['count']} images of {dataset})"
        )
    return 0
