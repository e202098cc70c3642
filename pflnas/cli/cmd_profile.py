"""``pflnas profile``: the cost of the derived networks of one or more found.json files, or of a space's ops.

For each ``--arch`` file: parameters and MACs (counted, :mod:`pflnas.measure.counting`) and, unless
``--no-speed``, measured latency at batch 1, throughput at ``--batch-size`` and peak memory of one forward
pass (:mod:`pflnas.measure.speed`). Several files give one table with each row's ratio to the first file.

``--ops --space NAME``: the per-op microbenchmark of :mod:`pflnas.measure.opbench`: every candidate op of the
space timed (forward, and forward + backward) at every place the space runs it, with ratios to a baseline op
and a network-level estimate per op. The text of both is :mod:`pflnas.measure.report`'s.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pflnas.arch.record import Architecture, load_architecture
from pflnas.config.loader import deep_merge, parse_override
from pflnas.errors import ConfigError
from pflnas.options import DATASET_PRESETS, SPEED_BATCH_SIZE, SPEED_REPEATS, SPEED_WARMUP
from pflnas.spaces.config import SpaceConfig, load_space

if TYPE_CHECKING:  # the modules that measure import torch: loaded in the functions that run them
    from pflnas.measure.context import SpeedConfig
    from pflnas.measure.opbench_results import OpBenchReport
    from pflnas.models import NetworkConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile")
    _add_network_flags(p)
    _add_ops_flags(p.add_argument_group("per-op benchmark (--ops)"))
    _add_speed_flags(p.add_argument_group("speed (measured; skipped with --no-speed)"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def _add_network_flags(p: argparse.ArgumentParser) -> None:
    """``--arch`` and how its networks are built (``--image-size`` serves ``--ops`` too)."""
    p.add_argument(
        "--arch",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="one or more found.json files (required unless --ops; default: none)",
    )
    p.add_argument(
        "--dataset",
        choices=list(DATASET_PRESETS),
        help="network family and input size: cifar10 (32x32) or imagenet (224x224); default: the record's "
        "provenance dataset (imagenet for the paper's shipped networks), else cifar10",
    )
    p.add_argument("--num-classes", type=int, metavar="N", help="output classes (default: the dataset's)")
    p.add_argument(
        "--init-channels",
        type=int,
        metavar="C",
        help="network width (default: 36 (DARTS cifar), 48 (imagenet), 16 (NB201))",
    )
    p.add_argument(
        "--layers",
        type=int,
        metavar="L",
        help="cells (DARTS) or cells per stage (NB201) (default: the builder's for the dataset)",
    )
    p.add_argument(
        "--auxiliary", action="store_true", help="build the auxiliary head and count its parameters"
    )
    p.add_argument(
        "--image-size",
        type=int,
        metavar="S",
        help="input side (default: the dataset's; with --ops 224 for block spaces, 32 for cell spaces)",
    )


def _add_ops_flags(ops: argparse._ArgumentGroup) -> None:
    ops.add_argument(
        "--ops",
        action="store_true",
        help="time every candidate op of --space at the shapes the space runs it at (instead of --arch)",
    )
    ops.add_argument(
        "--space", metavar="NAME_OR_YAML", help="a built-in space name or a space YAML file (default: none)"
    )
    ops.add_argument(
        "--only",
        nargs="+",
        metavar="OP",
        help="these ops only (the baselines are always timed; default: every op of the space)",
    )
    ops.add_argument(
        "--baseline",
        metavar="OP",
        help="the op every ratio is to (default conv_3x3, else the space's first op; per site where it "
        "cannot run)",
    )
    ops.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="space.KEY=VALUE",
        help="override a space field, e.g. space.skeleton.width_mult=0.25 or space.init_channels=8 "
        "(repeatable)",
    )


def _add_speed_flags(speed: argparse._ArgumentGroup) -> None:
    speed.add_argument("--no-speed", action="store_true", help="parameters and MACs only (fast)")
    speed.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to measure")
    speed.add_argument(
        "--batch-size",
        type=int,
        default=SPEED_BATCH_SIZE,  # the library's default
        metavar="N",
        help="batch of the throughput and memory runs (latency is at batch 1) and of every --ops timing; "
        "default %(default)s",
    )
    speed.add_argument("--amp", action="store_true", help="bf16 autocast")
    speed.add_argument("--channels-last", action="store_true", help="channels-last model and input")
    speed.add_argument("--threads", type=int, metavar="N", help="CPU intra-op threads (default: torch's)")
    speed.add_argument(
        "--warmup",
        type=int,
        default=SPEED_WARMUP,  # the library's default
        metavar="N",
        help="untimed passes first; default %(default)s",
    )
    speed.add_argument(
        "--repeats",
        type=int,
        default=SPEED_REPEATS,  # the library's default
        metavar="N",
        help="timed passes; default %(default)s",
    )


def _check_flag(flag: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{flag} must be {what}, got {value}")


def speed_config(args: argparse.Namespace) -> SpeedConfig:
    """The :class:`SpeedConfig` of the flags (validated with the flags' names; CUDA availability too)."""
    from pflnas.measure.context import SpeedConfig

    for flag, value in (
        ("--batch-size", args.batch_size),
        ("--repeats", args.repeats),
        ("--threads", args.threads),
    ):
        _check_flag(flag, value)
    _check_flag("--warmup", args.warmup, minimum=0)
    threads = {} if args.threads is None else {"threads": args.threads}
    return SpeedConfig(
        device=args.device,
        batch_size=args.batch_size,
        warmup=args.warmup,
        repeats=args.repeats,
        amp=args.amp,
        channels_last=args.channels_last,
        **threads,
    )


def _resolve(args: argparse.Namespace, path: Path) -> tuple[Architecture, NetworkConfig]:
    from pflnas.models import resolve_network_config
    from pflnas.models.factory import record_dataset

    arch = load_architecture(path)
    config = resolve_network_config(
        arch,
        dataset=args.dataset or record_dataset(arch),
        num_classes=args.num_classes,
        init_channels=args.init_channels,
        layers=args.layers,
        auxiliary=args.auxiliary,
        image_size=args.image_size,
    )
    return arch, config


TOO_WIDE = "lower --init-channels / --layers (block spaces: the skeleton's widths in the record)"


def _cost(
    args: argparse.Namespace, path: Path, arch: Architecture, config: NetworkConfig
) -> tuple[Any, dict]:
    """The built model and the report of its counted cost (the keys of the original ``pflnas profile``)."""
    import torch

    from pflnas.device import build_within_memory, memory_guard
    from pflnas.measure.counting import profile_model
    from pflnas.models import build_from_config

    cpu = torch.device("cpu")
    model = build_within_memory(
        lambda: build_from_config(arch, config), cpu, f"the network of {path}", TOO_WIDE
    )
    shape = config.input_shape(batch=1)
    with memory_guard(f"a forward pass of the network of {path}", TOO_WIDE):
        try:
            cost = profile_model(model, shape, exclude_auxiliary=not config.auxiliary)
        except (RuntimeError, ValueError) as exc:
            if args.image_size is None:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"--image-size {args.image_size}: {type(model).__name__} cannot run on "
                f"{args.image_size}x{args.image_size} inputs ({first})"
            ) from None
    report = {
        "arch": str(path),
        "space": arch.space.name,
        "network": {"class": type(model).__name__, **config.to_dict()},
        "input_shape": list(shape),
        "params_include_auxiliary": config.auxiliary,
        **cost,
    }
    return model, report


def profile_reports(args: argparse.Namespace) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The measurement context (None with ``--no-speed``) and one JSON-ready report per ``--arch`` file."""
    from pflnas.device import memory_guard
    from pflnas.measure.speed import measure_speed

    cfg = speed_config(args)
    resolved = [(path, *_resolve(args, path)) for path in args.arch]  # every file is checked before timing
    context: dict[str, Any] | None = None
    reports = []
    for path, arch, config in resolved:
        model, report = _cost(args, path, arch, config)
        if not args.no_speed:
            with memory_guard(f"timing the network of {path}", f"lower --batch-size, or {TOO_WIDE}"):
                speed = measure_speed(model, report["input_shape"], cfg)
            report.update(speed.to_dict())
            context = {
                **speed.context.to_dict(),
                "latency_batch_size": 1,
                "memory_method": speed.memory.method,
            }
        reports.append(report)
        del model
    if len(reports) > 1:
        first = reports[0]
        for report in reports:
            report["ratios"] = _ratios(report, first)
    return context, reports


def profile_report(args: argparse.Namespace) -> dict[str, Any]:
    """What ``pflnas profile --json`` prints: for one file its report (plus ``context``), for several
    ``{"context": ..., "results": [...]}``."""
    context, reports = profile_reports(args)
    if len(reports) == 1:
        return {**reports[0], "context": context}
    return {"context": context, "results": reports}


def _ratio(value: float, first: float) -> float | None:
    return value / first if first else None


def _ratios(report: dict[str, Any], first: dict[str, Any]) -> dict[str, float | None]:
    ratios = {
        "params": _ratio(report["params"], first["params"]),
        "macs": _ratio(report["macs"], first["macs"]),
    }
    if "latency" in report:
        ratios["latency"] = _ratio(report["latency"]["median_ms"], first["latency"]["median_ms"])
        ratios["throughput"] = _ratio(
            report["throughput"]["images_per_s"], first["throughput"]["images_per_s"]
        )
        ratios["activation_memory"] = _ratio(
            report["memory"]["activation_bytes"], first["memory"]["activation_bytes"]
        )
    return ratios


# --- --ops ---------------------------------------------------------------------------------------------
ARCH_ONLY = ("dataset", "num_classes", "init_channels", "layers", "auxiliary", "no_speed")
OPS_ONLY = ("space", "only", "baseline", "set")


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    """The flags among ``names`` (dest names) that were given."""
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n) not in (None, False, [])]


def _check_mode(args: argparse.Namespace) -> None:
    """``--arch FILE ...`` or ``--ops --space NAME``, each with only its own flags."""
    if args.ops:
        if args.arch:
            raise ConfigError("give --arch FILE ... or --ops --space NAME, not both")
        if args.space is None:
            raise ConfigError("--ops needs --space NAME_OR_YAML (e.g. --ops --space resnet50_block)")
        wrong = _given(args, ARCH_ONLY)
        if wrong:
            raise ConfigError(
                f"{', '.join(wrong)}: only with --arch; with --ops change the space with "
                "--set space.KEY=VALUE (e.g. --set space.init_channels=8)"
            )
        return
    if not args.arch:
        raise ConfigError("give --arch FILE ... (or --ops --space NAME)")
    wrong = _given(args, OPS_ONLY)
    if wrong:
        raise ConfigError(f"{', '.join(wrong)}: only with --ops")


def ops_space(args: argparse.Namespace) -> SpaceConfig:
    """``--space`` with the ``--set space.KEY=VALUE`` overrides applied."""
    space = load_space(args.space)
    changes: dict[str, Any] = {}
    for item in args.set:
        override = parse_override(item)
        if set(override) != {"space"} or not isinstance(override["space"], dict):
            raise ConfigError(
                f"--set {item}: with --ops only space.KEY=VALUE overrides apply "
                "(e.g. space.skeleton.width_mult=0.25, space.init_channels=8)"
            )
        changes = deep_merge(changes, override["space"])
    return space.replace(**changes) if changes else space


def ops_report(args: argparse.Namespace) -> OpBenchReport:
    """The per-op benchmark of ``--ops`` (flags validated first, with their names)."""
    from pflnas.measure.opbench import benchmark_ops, check_ops, default_image_size

    cfg = speed_config(args)
    space = ops_space(args)
    if args.only:
        check_ops(space, args.only, "--only")
    if args.baseline is not None:
        check_ops(space, [args.baseline], "--baseline")
    _check_flag("--image-size", args.image_size)
    size = default_image_size(space) if args.image_size is None else args.image_size
    return benchmark_ops(space, size, cfg, ops=args.only, baseline=args.baseline)


def run_ops(args: argparse.Namespace) -> int:
    from pflnas.measure.report import format_report

    report = ops_report(args)
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    print(format_report(report))
    _warn_if_contended(report.context.to_dict())
    return 0


def _warn_if_contended(context: dict[str, Any] | None) -> None:
    from pflnas.measure.report import contention_warning

    warning = None if context is None else contention_warning(context)
    if warning:
        print(warning, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    _check_mode(args)
    if args.ops:
        return run_ops(args)
    if args.json:
        print(json.dumps(profile_report(args)))
        return 0
    from pflnas.measure.report import format_network, format_networks

    context, reports = profile_reports(args)
    print(format_network(reports[0], context) if len(reports) == 1 else format_networks(reports, context))
    _warn_if_contended(context)
    return 0
