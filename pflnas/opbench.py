"""Per-op microbenchmark: every candidate op of a space, timed at the shapes the space runs it at.

For every :class:`~pflnas.spaces.skeletons.OpSite` of ``space.op_sites(image_size)`` (a stage and stride
with its channels and input grid) and every candidate that can be placed there (``none`` excepted), the op is
built alone, as the space builds it (``create_op(op, C, C, stride, context=space.context, heads=...)``, affine
BN), and timed on a random input of batch ``cfg.batch_size`` with :mod:`pflnas.speed`'s protocol
(:func:`~pflnas.speed.time_calls`: warm-up, timed passes one by one, CUDA events + synchronize on CUDA, the GC
paused, ``cfg.threads`` threads):

* **forward**: eval mode, every pass in inference mode (and bf16 autocast with ``cfg.amp``);
* **forward + backward**: train mode (BN uses batch statistics), the forward under bf16 autocast with
  ``cfg.amp`` and ``out.float().sum().backward()`` outside it (as PyTorch recommends), gradients w.r.t. the
  input and the parameters; gradients are set to None before every pass, outside the timed region.

Cell and bottleneck ops take ``[batch, C, H, W]`` (channels-last with ``cfg.channels_last``), token mixers
``[batch, H, W, dim]`` (already channels-last in memory; ``channels_last`` does not apply to it).

Each row also records parameters, MACs of one image's forward (:func:`pflnas.profile.count_macs`:
conv/linear/matmul only) and an estimate of the forward's minimum memory traffic: the input read, the
output written (nothing when the op returns its input, as the identity does) and the parameters and
floating-point buffers read, all at the compute dtype (bfloat16 with ``amp``, else the weights' dtype);
``gb_per_s`` is that traffic over the median forward time. Kernel-internal traffic (im2col, the expanded
activations inside a token mixer) is not counted, so this is a lower bound on what the op moves.

Each site has a *baseline* op (the ``baseline`` argument where it can be placed there, else ``conv_3x3``
where it can, else the space's first candidate that can); every row's ``forward_ratio`` and
``forward_backward_ratio`` are its median times over the baseline's at the same site.

The network-level estimate of an op is the time of its candidate-op slots in a network where every block
(or cell edge) runs that op: ``sum(site.blocks * median)`` over the sites. Where the op cannot be placed
(identity at stride 2, the 2x2-pool + conv op at stride 1) the site's baseline runs instead and the estimate
names those sites. The rest of the network (1x1 convs, MLPs, stem, head) is not included.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from pflnas.errors import ConfigError
from pflnas.names import name_hint
from pflnas.ops import PARAM_FREE, create_op, get_op
from pflnas.profile import count_macs, count_parameters
from pflnas.spaces.config import SpaceConfig
from pflnas.spaces.skeletons import OpSite
from pflnas.speed import (
    MeasurementContext,
    SpeedConfig,
    TimingStats,
    check_device,
    forward_mode,
    measurement_context,
    prepare_model,
    time_calls,
)
from pflnas.train.device import build_within_memory, check_fits, memory_guard

DEFAULT_BASELINE = "conv_3x3"
BLOCK_IMAGE_SIZE = 224  # default input side for block spaces (ImageNet)
CELL_IMAGE_SIZE = 32  # default input side for cell spaces (CIFAR)
WIDTH = 110  # text report width


def default_image_size(space: SpaceConfig) -> int:
    """224 for block spaces (ResNet / ViT / PiT skeletons), 32 for cell spaces."""
    return BLOCK_IMAGE_SIZE if space.is_block else CELL_IMAGE_SIZE


# --- results -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpMeasurement:
    """One op at one site: counts, traffic estimate, both timings and the ratios to the site's baseline."""

    op: str
    param_free: bool  # the op's spatial / token-mixing operation has no parameters at this stride
    params: int
    macs: int  # one image's forward (conv/linear/matmul only)
    traffic_bytes: int  # minimum forward memory traffic at the batch (see the module doc)
    output_shape: tuple[int, ...]
    forward: TimingStats
    forward_backward: TimingStats
    forward_ratio: float  # median forward time / the site baseline's
    forward_backward_ratio: float

    @property
    def gb_per_s(self) -> float | None:
        """Achieved bandwidth: traffic over the median forward time (None without traffic or time)."""
        if self.traffic_bytes == 0 or self.forward.median <= 0:
            return None
        return self.traffic_bytes / (self.forward.median * 1e6)

    def to_dict(self, include_times: bool = True) -> dict[str, Any]:
        return {
            "op": self.op,
            "param_free": self.param_free,
            "params": self.params,
            "macs": self.macs,
            "traffic_bytes": self.traffic_bytes,
            "gb_per_s": self.gb_per_s,
            "output_shape": list(self.output_shape),
            "forward": self.forward.to_dict(include_times),
            "forward_backward": self.forward_backward.to_dict(include_times),
            "forward_ratio": self.forward_ratio,
            "forward_backward_ratio": self.forward_backward_ratio,
        }


@dataclass(frozen=True)
class SiteBench:
    """Every measured op at one site, in the space's op order, and the site's baseline."""

    index: int
    site: OpSite
    input_shape: tuple[int, ...]  # at the benchmark's batch
    baseline: str
    baseline_reason: str  # "requested", "default", or why another op is the baseline here
    ops: tuple[OpMeasurement, ...]

    def get(self, op: str) -> OpMeasurement | None:
        return next((m for m in self.ops if m.op == op), None)

    @property
    def baseline_row(self) -> OpMeasurement:
        return next(m for m in self.ops if m.op == self.baseline)

    def to_dict(self, include_times: bool = True) -> dict[str, Any]:
        s = self.site
        return {
            "index": self.index,
            "stage": s.stage,
            "stride": s.stride,
            "channels": s.channels,
            "height": s.height,
            "width": s.width,
            "heads": s.heads,
            "blocks": s.blocks,
            "input_shape": list(self.input_shape),
            "baseline": self.baseline,
            "baseline_reason": self.baseline_reason,
            "ops": [m.to_dict(include_times) for m in self.ops],
        }


@dataclass(frozen=True)
class NetworkEstimate:
    """An op's candidate-op slots summed over a network where every block runs it (times in ms, per batch).

    ``substituted_sites`` are the sites where the op cannot be placed and the site's baseline's numbers
    were used; ``substituted_blocks`` counts their blocks."""

    op: str
    forward_ms: float
    forward_backward_ms: float
    forward_ratio: float  # over the baseline network's
    forward_backward_ratio: float
    params: int
    macs: int
    substituted_sites: tuple[int, ...]
    substituted_blocks: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "forward_ms": self.forward_ms,
            "forward_backward_ms": self.forward_backward_ms,
            "forward_ratio": self.forward_ratio,
            "forward_backward_ratio": self.forward_backward_ratio,
            "params": self.params,
            "macs": self.macs,
            "substituted_sites": list(self.substituted_sites),
            "substituted_blocks": self.substituted_blocks,
        }


@dataclass(frozen=True)
class OpBenchReport:
    space: str
    op_context: str  # "cell", "bottleneck" or "token"
    image_size: int
    batch_size: int
    traffic_dtype: str  # the dtype the traffic estimate counts bytes at
    requested_baseline: str | None
    ops: tuple[str, ...]  # the measured ops (the requested ones and the baselines), in the space's order
    sites: tuple[SiteBench, ...]
    network: tuple[NetworkEstimate, ...]  # one per op of ``ops``
    baseline_forward_ms: float  # the network running each site's baseline
    baseline_forward_backward_ms: float
    context: MeasurementContext

    @property
    def unit(self) -> str:
        """What ``OpSite.blocks`` counts: cell edges or blocks."""
        return "blocks" if self.op_context != "cell" else "edges"

    def network_of(self, op: str) -> NetworkEstimate:
        return next(n for n in self.network if n.op == op)

    def baseline_ops(self) -> tuple[str, ...]:
        """The baselines used, in site order, without repeats."""
        return tuple(dict.fromkeys(s.baseline for s in self.sites))

    def to_dict(self, include_times: bool = True) -> dict[str, Any]:
        return {
            "space": self.space,
            "op_context": self.op_context,
            "image_size": self.image_size,
            "batch_size": self.batch_size,
            "traffic_dtype": self.traffic_dtype,
            "requested_baseline": self.requested_baseline,
            "ops": list(self.ops),
            "context": self.context.to_dict(),
            "sites": [s.to_dict(include_times) for s in self.sites],
            "network": {
                "note": (
                    f"candidate-op time of a network whose {self.unit} all run the op: sum over sites of "
                    f"{self.unit} x median time per batch (ms); sites where the op cannot be placed use "
                    "the site's baseline; the rest of the network is not included"
                ),
                "baseline": {
                    "ops": [s.baseline for s in self.sites],
                    "forward_ms": self.baseline_forward_ms,
                    "forward_backward_ms": self.baseline_forward_backward_ms,
                },
                "ops": [n.to_dict() for n in self.network],
            },
        }


# --- choosing ops --------------------------------------------------------------------------------------
def candidate_ops(space: SpaceConfig) -> tuple[str, ...]:
    """The ops the benchmark can measure: the space's candidates without ``none``."""
    return tuple(op for op in space.ops if not get_op(op).is_zero)


def check_ops(space: SpaceConfig, names: Sequence[str], what: str) -> None:
    """Raise a one-line :class:`ConfigError` (naming ``what``, e.g. ``--only``) for names that are not
    candidates of ``space`` (``none`` included: it is not benchmarked)."""
    ops = candidate_ops(space)
    bad = [n for n in names if n not in ops]
    if bad:
        zero = " ('none' is not benchmarked)" if any(get_op(n).is_zero for n in bad if n in space.ops) else ""
        raise ConfigError(
            f"{what}: unknown op{'s' * (len(bad) > 1)} {', '.join(bad)} for space {space.name!r}; "
            f"its ops are {', '.join(ops)}{zero}{name_hint(bad[0], ops)}"
        )


def valid_ops(space: SpaceConfig, stride: int) -> tuple[str, ...]:
    """The benchmarkable candidates that can be placed at ``stride``, in the space's order."""
    return tuple(op for op in space.ops_at(stride) if not get_op(op).is_zero)


def site_baseline(space: SpaceConfig, stride: int, requested: str | None = None) -> tuple[str, str]:
    """The baseline op at a site of ``stride`` and why (``requested``, ``default``, or a phrase):
    ``requested`` where it can be placed, else ``conv_3x3`` where it can, else the space's first candidate
    that can."""
    valid = valid_ops(space, stride)
    if not valid:
        raise ConfigError(f"space {space.name!r}: no benchmarkable op can be placed at stride {stride}")
    if requested in valid:
        return requested, "requested"
    why = f"{requested} cannot run at stride {stride}" if requested is not None else ""
    if DEFAULT_BASELINE in valid:
        return DEFAULT_BASELINE, why or "default"
    return valid[0], f"{why}; the space's first op" if why else "the space's first op"


# --- measuring -----------------------------------------------------------------------------------------
def benchmark_ops(
    space: SpaceConfig,
    image_size: int,
    cfg: SpeedConfig,
    ops: Sequence[str] | None = None,
    baseline: str | None = None,
) -> OpBenchReport:
    """Time every candidate op (or ``ops``) of ``space`` at every site it runs at (see the module doc).

    The site baselines are always measured too. Unknown ops raise :class:`ConfigError` naming the space's
    ops; so does an op that can be placed at none of the sites.
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ConfigError(f"image size must be a positive integer, got {image_size!r}")
    if ops is not None:
        if not ops:
            raise ConfigError("ops: give at least one op")
        check_ops(space, ops, "ops")
    if baseline is not None:
        check_ops(space, [baseline], "baseline")
    sites = space.op_sites(image_size)
    if not sites:
        raise ConfigError(f"space {space.name!r} has no op sites at image size {image_size}")
    baselines = [site_baseline(space, s.stride, baseline) for s in sites]
    wanted = set(candidate_ops(space) if ops is None else ops) | {b for b, _ in baselines}
    measured = tuple(op for op in candidate_ops(space) if op in wanted)
    placeable = {op for s in sites for op in valid_ops(space, s.stride)}
    nowhere = [op for op in measured if op not in placeable]
    if nowhere:
        raise ConfigError(
            f"op {', '.join(nowhere)} cannot be placed at any site of space {space.name!r} "
            f"(strides {sorted({s.stride for s in sites})})"
        )

    device = check_device(cfg.device)
    results = []
    with _threads(cfg.threads):
        for index, (site, (base, reason)) in enumerate(zip(sites, baselines, strict=True)):
            with memory_guard(
                f"timing the ops at {site.channels} channels", f"lower --batch-size, or {TOO_WIDE}"
            ):
                raw = {
                    op: _measure(space, site, op, cfg, device)
                    for op in measured
                    if op in valid_ops(space, site.stride)
                }
            fwd, fb = raw[base].forward.median, raw[base].forward_backward.median
            rows = tuple(
                OpMeasurement(
                    op=op,
                    param_free=get_op(op).role(site.stride) == PARAM_FREE,
                    params=r.params,
                    macs=r.macs,
                    traffic_bytes=r.traffic_bytes,
                    output_shape=r.output_shape,
                    forward=r.forward,
                    forward_backward=r.forward_backward,
                    forward_ratio=r.forward.median / fwd,
                    forward_backward_ratio=r.forward_backward.median / fb,
                )
                for op, r in raw.items()
            )
            shape = _input_shape(space.context, site, cfg.batch_size)
            results.append(SiteBench(index, site, shape, base, reason, rows))
    base_fwd = sum(s.site.blocks * s.baseline_row.forward.median for s in results)
    base_fb = sum(s.site.blocks * s.baseline_row.forward_backward.median for s in results)
    network = tuple(_network_estimate(op, results, base_fwd, base_fb) for op in measured)
    return OpBenchReport(
        space=space.name,
        op_context=space.context,
        image_size=image_size,
        batch_size=cfg.batch_size,
        traffic_dtype=_dtype_name(_compute_dtype(cfg)),
        requested_baseline=baseline,
        ops=measured,
        sites=tuple(results),
        network=network,
        baseline_forward_ms=base_fwd,
        baseline_forward_backward_ms=base_fb,
        context=measurement_context(cfg, cfg.batch_size),
    )


def _network_estimate(op: str, sites: list[SiteBench], base_fwd: float, base_fb: float) -> NetworkEstimate:
    fwd = fb = 0.0
    params = macs = blocks = 0
    substituted = []
    for s in sites:
        m = s.get(op)
        if m is None:
            m = s.baseline_row
            substituted.append(s.index)
            blocks += s.site.blocks
        fwd += s.site.blocks * m.forward.median
        fb += s.site.blocks * m.forward_backward.median
        params += s.site.blocks * m.params
        macs += s.site.blocks * m.macs
    return NetworkEstimate(
        op, fwd, fb, fwd / base_fwd, fb / base_fb, params, macs, tuple(substituted), blocks
    )


def _input_shape(context: str, site: OpSite, batch: int) -> tuple[int, ...]:
    if context == "token":
        return (batch, site.height, site.width, site.channels)
    return (batch, site.channels, site.height, site.width)


class _Measured(NamedTuple):
    params: int
    macs: int
    traffic_bytes: int
    output_shape: tuple[int, ...]
    forward: TimingStats
    forward_backward: TimingStats


TOO_WIDE = "lower the space's widths (e.g. --set space.skeleton.width_mult=0.25 or space.init_channels=8)"


def _measure(space: SpaceConfig, site: OpSite, op: str, cfg: SpeedConfig, device: torch.device) -> _Measured:
    """Count, then time the forward and the forward + backward pass of ``op`` built alone at ``site``."""
    torch.manual_seed(0)
    c = site.channels
    where = f"op {op} at {c} channels"
    model = build_within_memory(
        lambda: create_op(op, c, c, site.stride, context=space.context, heads=site.heads),
        torch.device("cpu"),
        where,
        TOO_WIDE,
    )
    params = count_parameters(model)
    macs = count_macs(model, _input_shape(space.context, site, 1))
    prepare_model(model, cfg)
    shape = _input_shape(space.context, site, cfg.batch_size)
    # timing forward + backward holds the input, the output and both their gradients at once
    check_fits(f"timing {where}", 4 * 4 * math.prod(shape), device, f"lower --batch-size, or {TOO_WIDE}")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=_weights_dtype(model)).to(device)
    if cfg.channels_last and space.context != "token":
        x = x.contiguous(memory_format=torch.channels_last)

    model.eval()
    with forward_mode(cfg, device):
        out = model(x)
        out_shape, aliases = tuple(out.shape), _same_storage(out, x)
    del out
    traffic = _traffic_bytes(model, x, out_shape, aliases, cfg)
    forward = time_calls(lambda: model(x), cfg, device, lambda: forward_mode(cfg, device))
    forward_stats = TimingStats(tuple(forward), measurement_context(cfg, cfg.batch_size, model))

    model.train()
    xg = x.detach().clone().requires_grad_(True)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp else contextlib.nullcontext():
            y = model(xg)
        y.float().sum().backward()

    @contextlib.contextmanager
    def fresh_grads() -> Iterator[None]:
        model.zero_grad(set_to_none=True)
        xg.grad = None
        yield

    backward = time_calls(step, cfg, device, fresh_grads)
    backward_stats = TimingStats(tuple(backward), measurement_context(cfg, cfg.batch_size, model))
    return _Measured(params, macs, traffic, out_shape, forward_stats, backward_stats)


def _traffic_bytes(
    model: nn.Module, x: torch.Tensor, out_shape: tuple[int, ...], aliases: bool, cfg: SpeedConfig
) -> int:
    if aliases:  # the op returns its input (identity): nothing is read or written
        return 0
    weights = sum(p.numel() for p in model.parameters())
    weights += sum(b.numel() for b in model.buffers() if b.is_floating_point())
    elements = x.numel() + math.prod(out_shape) + weights
    return elements * _compute_dtype(cfg, model).itemsize


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _weights_dtype(model: nn.Module) -> torch.dtype:
    first = next(model.parameters(), None)
    return first.dtype if first is not None and first.is_floating_point() else torch.float32


def _compute_dtype(cfg: SpeedConfig, model: nn.Module | None = None) -> torch.dtype:
    if cfg.amp:
        return torch.bfloat16
    return torch.float32 if model is None else _weights_dtype(model)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --- text ----------------------------------------------------------------------------------------------
def _count(n: int) -> str:
    """``950``, ``36.9K``, ``2.36M``, ``115M``, ``1.85G``."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            v = n / div
            return f"{v:.2f}{suffix}" if v < 10 else f"{v:.1f}{suffix}" if v < 100 else f"{v:.0f}{suffix}"
    return str(n)


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def _x(v: float) -> str:
    return f"{v:.2f}x"


def _table(rows: list[list[str]], left: int = 1) -> list[str]:
    """Aligned rows (two spaces apart): the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in rows
    ]


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, subsequent_indent="  ", break_on_hyphens=False)


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit if n != 1 else unit[:-1]}"


def _site_title(report: OpBenchReport, s: SiteBench) -> str:
    site = s.site
    base = f"baseline {s.baseline}"
    if s.baseline_reason not in ("default", "requested"):
        base += f" ({s.baseline_reason})"
    n = _plural(site.blocks, report.unit)
    if report.op_context == "token":
        grid = f"dim {site.channels}, {site.heads} heads, {site.height}x{site.width} tokens"
        return f"stage {site.stage}: {grid}, {n}; {base}"
    grid = f"{site.channels} ch, {site.height}x{site.width}"
    if site.stride != 1:
        out = s.ops[0].output_shape
        grid += f" -> {out[-2]}x{out[-1]}"
    return f"stage {site.stage}, stride {site.stride}: {grid}, {n}; {base}"


def _gbps(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}" if v < 10 else f"{v:.1f}"


def _substitution_note(report: OpBenchReport, n: NetworkEstimate, mark: str) -> str:
    sites = [report.sites[i] for i in n.substituted_sites]
    strides = sorted({s.site.stride for s in sites})
    stages = ", ".join(str(st) for st in sorted({s.site.stage for s in sites}))
    bases = sorted({s.baseline for s in sites})
    base = f"{bases[0]} is" if len(bases) == 1 else "each site's baseline is"
    return (
        f"{mark} {n.op} cannot run at stride {', '.join(map(str, strides))} "
        f"({_plural(n.substituted_blocks, report.unit)}, stage{'s' * (len(sites) > 1)} {stages}): "
        f"{base} counted there"
    )


def format_report(report: OpBenchReport) -> str:
    """The text of ``pflnas profile --ops`` (lines of at most 110 characters but for very long op or
    CPU names): the context, one table per site, the network-level estimate."""
    ctx = report.context
    lines = [
        *_wrap(f"context: {ctx.describe()}"),
        *_wrap(
            f"space {report.space} ({report.op_context} ops), image {report.image_size}, "
            f"batch {report.batch_size}; times: ms per batch, median ± IQR of {ctx.repeats} passes"
        ),
    ]
    header = ["op", "free", "params", "MACs", "fwd ms ± IQR", "fwd+bwd ms ± IQR", "GB/s", "fwd x", "f+b x"]
    for s in report.sites:
        rows = [header]
        for m in s.ops:
            rows.append(
                [
                    m.op,
                    "yes" if m.param_free else "no",
                    _count(m.params),
                    _count(m.macs),
                    f"{_ms(m.forward.median)} ± {_ms(m.forward.iqr)}",
                    f"{_ms(m.forward_backward.median)} ± {_ms(m.forward_backward.iqr)}",
                    _gbps(m.gb_per_s),
                    _x(m.forward_ratio),
                    _x(m.forward_backward_ratio),
                ]
            )
        lines += ["", *_wrap(_site_title(report, s)), *_table(rows)]
    lines += [
        "",
        *_wrap(
            "free: parameter-free op; MACs: one image's forward (conv/linear/matmul); fwd: eval forward; "
            "f+b: train forward+backward; GB/s: minimum forward memory traffic (input + output + weights "
            f"at {report.traffic_dtype}; none for an op returning its input) / median fwd time; "
            "x: median time / the site baseline's"
        ),
    ]

    baselines = report.baseline_ops()
    single = baselines[0] if len(baselines) == 1 else None
    lines += [
        "",
        *_wrap(
            f"network estimate: every {report.unit[:-1]} runs the op; sum over sites of {report.unit} x "
            "median ms per batch (candidate ops only, the rest of the network is not included); x: ratio "
            f"to the network of {single or 'each site baseline (the baseline row)'}"
        ),
    ]
    rows = [["op", "params", "MACs", "fwd ms", "fwd x", "fwd+bwd ms", "f+b x"]]
    if single is None:
        rows.append(
            [
                "baseline",
                "",
                "",
                _ms(report.baseline_forward_ms),
                _x(1.0),
                _ms(report.baseline_forward_backward_ms),
                _x(1.0),
            ]
        )
    notes: list[str] = []
    for n in report.network:
        mark = ""
        if n.substituted_sites:
            mark = "*" * (len(notes) + 1)
            notes += _wrap(_substitution_note(report, n, mark))
        rows.append(
            [
                n.op + mark,
                _count(n.params),
                _count(n.macs),
                _ms(n.forward_ms),
                _x(n.forward_ratio),
                _ms(n.forward_backward_ms),
                _x(n.forward_backward_ratio),
            ]
        )
    lines += _table(rows) + notes
    return "\n".join(lines)
