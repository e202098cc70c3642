"""``pflnas profile``: the cost of the derived network of a found.json (parameters, MACs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pflnas.arch.record import load_architecture
from pflnas.models import DATASET_PRESETS, build_from_config, resolve_network_config
from pflnas.profile import profile_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="parameter count and MACs of the network derived from a found.json")
    p.add_argument("--arch", type=Path, required=True, metavar="FILE", help="the found.json")
    p.add_argument(
        "--dataset",
        default="cifar10",
        choices=list(DATASET_PRESETS),
        help="network family and input size: cifar10 (32x32) or imagenet (224x224); default cifar10",
    )
    p.add_argument("--num-classes", type=int, metavar="N", help="default: the dataset's")
    p.add_argument(
        "--init-channels", type=int, metavar="C", help="default: 36 (DARTS cifar), 48 (imagenet), 16 (NB201)"
    )
    p.add_argument("--layers", type=int, metavar="L", help="cells (DARTS) or cells per stage (NB201)")
    p.add_argument(
        "--auxiliary", action="store_true", help="build the auxiliary head and count its parameters"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def profile_report(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``pflnas profile`` reports, as a JSON-ready dict."""
    arch = load_architecture(args.arch)
    config = resolve_network_config(
        arch,
        dataset=args.dataset,
        num_classes=args.num_classes,
        init_channels=args.init_channels,
        layers=args.layers,
        auxiliary=args.auxiliary,
    )
    model = build_from_config(arch, config)
    shape = config.input_shape(batch=1)
    return {
        "arch": str(args.arch),
        "space": arch.space.name,
        "network": {"class": type(model).__name__, **config.to_dict()},
        "input_shape": list(shape),
        "params_include_auxiliary": config.auxiliary,
        **profile_model(model, shape, exclude_auxiliary=not config.auxiliary),
    }


def run(args: argparse.Namespace) -> int:
    report = profile_report(args)
    if args.json:
        print(json.dumps(report))
        return 0
    net = report["network"]
    aux = "included" if report["params_include_auxiliary"] else "excluded"
    print(f"arch      {report['arch']} (space {report['space']})")
    print(
        f"network   {net['class']}: {net['dataset']}, {net['num_classes']} classes, "
        f"C={net['init_channels']}, layers={net['layers']}"
    )
    print(f"input     {'x'.join(map(str, report['input_shape']))}")
    print(f"params    {report['params']:,} ({report['params'] / 1e6:.2f} M, auxiliary head {aux})")
    print(f"macs      {report['macs']:,} ({report['macs'] / 1e6:.2f} M; conv/linear/matmul only, eval mode)")
    return 0
