"""``pflnas evaluate``: top-1/top-5 of a retrained checkpoint on a dataset's evaluation split."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from pflnas.errors import PflnasError
from pflnas.options import DATASET_PRESETS

if TYPE_CHECKING:
    from pflnas.models import NetworkConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate")
    p.add_argument(
        "--arch", required=True, metavar="FILE", help="the architecture file the checkpoint was trained from"
    )
    p.add_argument(
        "--checkpoint", required=True, metavar="CKPT", help="last.pt or best.pt of a 'pflnas retrain' run"
    )
    p.add_argument(
        "--dataset",
        help=f"{', '.join(DATASET_PRESETS)} (default: the dataset the checkpoint was trained on)",
    )
    p.add_argument(
        "--data-dir", metavar="DIR", help="where the dataset is (default: $PFLNAS_DATA, else the cache dir)"
    )
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="evaluation batch size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights stored in the checkpoint")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pflnas.arch.record import load_architecture
    from pflnas.data.retrain import retrain_loaders
    from pflnas.train.distributed import init_distributed
    from pflnas.train.retrain_eval import evaluate
    from pflnas.trained import load_trained_network

    arch = load_architecture(args.arch)
    model, net_cfg = load_trained_network(arch, args.checkpoint, ema=args.ema, auxiliary=False)
    dataset = args.dataset or net_cfg.dataset
    _check_fits(dataset, net_cfg)  # before the (slow) data load
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
            f"{dataset} has {data.num_classes} classes but the checkpoint's network has "
            f"{net_cfg.num_classes}; evaluate on the data it was trained on ({net_cfg.dataset})"
        )
    result = evaluate(model.to(info.device), data.eval, info, None)
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


def _check_fits(dataset: str, net_cfg: NetworkConfig) -> None:
    """Refuse a dataset whose images (channels) or fixed class count the checkpoint's network cannot take."""
    preset = DATASET_PRESETS.get(dataset)
    if preset is None:  # an unknown name: the data loader says which names exist
        return
    classes = preset.num_classes if dataset != "imagenet" else net_cfg.num_classes  # ImageFolder subsets
    if (preset.in_channels, classes) != (net_cfg.in_channels, net_cfg.num_classes):
        raise PflnasError(
            f"{dataset} has {preset.in_channels}-channel images and {preset.num_classes} classes, but the "
            f"checkpoint's network takes {net_cfg.in_channels}-channel images and has {net_cfg.num_classes} "
            f"classes; evaluate on the data it was trained on (--dataset {net_cfg.dataset})"
        )
