"""``pflnas export``: the derived network of a found.json, with retrained weights, as an ONNX file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pflnas.cli.paths import check_out_file
from pflnas.errors import ConfigError
from pflnas.options import DATASET_PRESETS, DEFAULT_OPSET, EXPORTERS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export")
    p.add_argument("--arch", type=Path, required=True, metavar="FILE", help="the found.json")
    p.add_argument(
        "--checkpoint",
        type=Path,
        metavar="CKPT",
        help="a 'pflnas retrain' checkpoint (default: none, random weights, with a warning)",
    )
    p.add_argument("--onnx", type=Path, required=True, metavar="OUT", help="the .onnx file to write")
    p.add_argument(
        "--dataset",
        choices=list(DATASET_PRESETS),
        help="network family and input size; default: the checkpoint's, else cifar10",
    )
    p.add_argument(
        "--num-classes", type=int, metavar="N", help="output classes (default: the checkpoint's or dataset's)"
    )
    p.add_argument(
        "--init-channels",
        type=int,
        metavar="C",
        help="network width (default: the checkpoint's or builder's)",
    )
    p.add_argument(
        "--layers", type=int, metavar="L", help="cells or blocks (default: the checkpoint's or builder's)"
    )
    p.add_argument("--ema", action="store_true", help="export the checkpoint's EMA weights")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N", help="ONNX opset")
    p.add_argument(
        "--batch-size",
        type=int,
        default=1,
        metavar="B",
        help="batch size of the parity check's first input (it also runs B+1); the batch axis is dynamic",
    )
    p.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="auto",
        help="auto (default): torch's dynamo exporter if onnxscript is installed, else TorchScript",
    )
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime parity check")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pflnas.arch.record import load_architecture
    from pflnas.export import export_onnx, require
    from pflnas.trained import load_trained_network

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    _check_opset(args.opset)
    check_out_file(args.onnx, "--onnx", example="model.onnx")
    require("onnx", "ONNX export")  # fail before the (slow) build when the extra is missing
    if not args.no_check:
        require("onnxruntime", "the ONNX parity check (or pass --no-check)")
    arch = load_architecture(args.arch)
    model, config = load_trained_network(
        arch,
        args.checkpoint,
        ema=args.ema,
        dataset=args.dataset,
        num_classes=args.num_classes,
        init_channels=args.init_channels,
        layers=args.layers,
    )
    if args.checkpoint is None:
        print(
            "pflnas export: warning: no --checkpoint; exporting randomly initialised weights", file=sys.stderr
        )
    shape = config.input_shape(args.batch_size)
    exported, report = export_onnx(
        model, shape, args.onnx, opset=args.opset, exporter=args.exporter, check=not args.no_check
    )
    if exported.note:
        print(f"pflnas export: warning: {exported.note}", file=sys.stderr)
    weights = f"{args.checkpoint}{' (EMA)' if args.ema else ''}" if args.checkpoint else "random"
    print(
        f"network   {type(model).__name__}: {config.dataset}, {config.num_classes} classes, "
        f"C={config.init_channels}, layers={config.layers}; weights {weights}"
    )
    print(
        f"onnx      {args.onnx} ({exported.exporter} exporter, opset {exported.opset}, "
        f"input [batch, {shape[1]}, {shape[2]}, {shape[3]}], {len(exported.data) / 1e6:.2f} MB)"
    )
    if report is not None:
        print(
            f"parity    max |onnx - torch| {report.max_abs_diff:.2e} <= {report.limit:.1e} "
            f"(logits scale {report.logits_scale:.3g}; batch {' and '.join(map(str, report.batch_sizes))})"
        )
    return 0


def _check_opset(opset: int) -> None:
    """Refuse an ONNX opset torch cannot write before building anything (torch would dump its IR graph)."""
    try:
        from torch.onnx import _constants  # private, so read defensively

        low, high = int(_constants.ONNX_MIN_OPSET), int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):
        low, high = 7, None
    if opset < low or (high is not None and opset > high):
        top = f"..{high}" if high is not None else " or more"
        raise ConfigError(
            f"--opset {opset} is not an ONNX opset torch can write; use {low}{top} (default {DEFAULT_OPSET})"
        )
