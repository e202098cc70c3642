"""Per-op microbenchmark: every candidate op of a space, timed at the shapes the space runs it at.

An op's cost depends on where it runs, so each op is built alone, as the space builds it, at every
:class:`~pflnas.spaces.skeletons.OpSite` it can be placed at, and timed forward and forward + backward
(:func:`_measure`). Rows are compared with a per-site baseline op (:func:`site_baseline`) and summed into a
network-level estimate (:func:`_network_estimate`); MACs and a memory-traffic lower bound
(:func:`_traffic_bytes`) help tell compute-bound from memory-bound ops.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import nn

from pflnas.device import build_within_memory, check_fits, memory_guard
from pflnas.errors import ConfigError
from pflnas.measure.context import SpeedConfig, check_device, measurement_context
from pflnas.measure.counting import count_macs, count_parameters
from pflnas.measure.dtypes import compute_dtype, dtype_name, param_dtype
from pflnas.measure.opbench_results import NetworkEstimate, OpBenchReport, OpMeasurement, SiteBench
from pflnas.measure.prepare import forward_mode, op_input_shape, prepare_model, random_input, threads
from pflnas.measure.timing import TimingStats, time_calls
from pflnas.names import name_hint
from pflnas.ops import PARAM_FREE, create_op, get_op
from pflnas.spaces.config import SpaceConfig
from pflnas.spaces.skeletons import OpSite

DEFAULT_BASELINE = "conv_3x3"
BLOCK_IMAGE_SIZE = 224  # default input side for block spaces (ImageNet)
CELL_IMAGE_SIZE = 32  # default input side for cell spaces (CIFAR)
TOO_WIDE = "lower the space's widths (e.g. --set space.skeleton.width_mult=0.25 or space.init_channels=8)"


def default_image_size(space: SpaceConfig) -> int:
    """224 for block spaces (ResNet / ViT / PiT skeletons), 32 for cell spaces."""
    return BLOCK_IMAGE_SIZE if space.is_block else CELL_IMAGE_SIZE


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
    that can. Every row's ``forward_ratio`` and ``forward_backward_ratio`` are its median times over the
    baseline's at the same site."""
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
    """Time every candidate op (or ``ops``) of ``space`` at every site it runs at (see :func:`_measure`).

    The site baselines are always measured too. Unknown ops raise :class:`ConfigError` naming the space's
    ops; so does an op that can be placed at none of the sites.
    """
    sites, baselines, measured = _plan(space, image_size, ops, baseline)
    device = check_device(cfg.device)
    with threads(cfg.threads):
        results = [
            _bench_site(space, index, site, base, reason, measured, cfg, device)
            for index, (site, (base, reason)) in enumerate(zip(sites, baselines, strict=True))
        ]
    base_fwd = sum(s.site.blocks * s.baseline_row.forward.median for s in results)
    base_fb = sum(s.site.blocks * s.baseline_row.forward_backward.median for s in results)
    network = tuple(_network_estimate(op, results, base_fwd, base_fb) for op in measured)
    return OpBenchReport(
        space=space.name,
        op_context=space.context,
        image_size=image_size,
        batch_size=cfg.batch_size,
        traffic_dtype=dtype_name(compute_dtype(cfg.amp)),
        requested_baseline=baseline,
        ops=measured,
        sites=tuple(results),
        network=network,
        baseline_forward_ms=base_fwd,
        baseline_forward_backward_ms=base_fb,
        context=measurement_context(cfg, cfg.batch_size),
    )


def _plan(
    space: SpaceConfig, image_size: int, ops: Sequence[str] | None, baseline: str | None
) -> tuple[list[OpSite], list[tuple[str, str]], tuple[str, ...]]:
    """The sites, each site's baseline (and why) and the ops to measure; a ConfigError for a bad request."""
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
    return sites, baselines, measured


def _bench_site(
    space: SpaceConfig,
    index: int,
    site: OpSite,
    base: str,
    reason: str,
    measured: tuple[str, ...],
    cfg: SpeedConfig,
    device: torch.device,
) -> SiteBench:
    """Every op of ``measured`` that can be placed at ``site``, with its ratios to the site's baseline."""
    with memory_guard(f"timing the ops at {site.channels} channels", f"lower --batch-size, or {TOO_WIDE}"):
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
    shape = op_input_shape(space.context, site, cfg.batch_size)
    return SiteBench(index, site, shape, base, reason, rows)


def _network_estimate(op: str, sites: list[SiteBench], base_fwd: float, base_fb: float) -> NetworkEstimate:
    """The time of the candidate-op slots of a network where every block (or cell edge) runs ``op``:
    ``sum(site.blocks * median)`` over the sites. Where ``op`` cannot be placed (identity at stride 2, the
    2x2-pool + conv op at stride 1) the site's baseline runs instead and the estimate names those sites.
    The rest of the network (1x1 convs, MLPs, stem, head) is not included."""
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


class _Measured(NamedTuple):
    params: int
    macs: int
    traffic_bytes: int
    output_shape: tuple[int, ...]
    forward: TimingStats
    forward_backward: TimingStats


def _measure(space: SpaceConfig, site: OpSite, op: str, cfg: SpeedConfig, device: torch.device) -> _Measured:
    """Count, then time the forward and the forward + backward pass of ``op`` built alone at ``site``.

    Built as the space builds it (``create_op(op, C, C, stride, context=space.context, heads=...)``, affine
    BN), timed on a random input of batch ``cfg.batch_size`` with :func:`~pflnas.measure.timing.time_calls`
    (warm-up, timed passes one by one, CUDA events + synchronize on CUDA, the GC paused, ``cfg.threads``
    threads):

    * **forward**: eval mode, every pass in inference mode (and bf16 autocast with ``cfg.amp``);
    * **forward + backward**: train mode (BN uses batch statistics), the forward under bf16 autocast with
      ``cfg.amp`` and ``out.float().sum().backward()`` outside it (as PyTorch recommends), gradients w.r.t.
      the input and the parameters; gradients are set to None before every pass, outside the timed region.

    Cell and bottleneck ops take ``[batch, C, H, W]`` (channels-last with ``cfg.channels_last``), token
    mixers ``[batch, H, W, dim]`` (already channels-last in memory; ``channels_last`` does not apply).
    Parameters and MACs of one image's forward (:func:`pflnas.measure.counting.count_macs`: conv/linear/
    matmul only) are counted too; ``gb_per_s`` is :func:`_traffic_bytes` over the median forward time.
    """
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
    macs = count_macs(model, op_input_shape(space.context, site, 1))
    prepare_model(model, cfg)
    shape = op_input_shape(space.context, site, cfg.batch_size)
    # timing forward + backward holds the input, the output and both their gradients at once
    check_fits(f"timing {where}", 4 * 4 * math.prod(shape), device, f"lower --batch-size, or {TOO_WIDE}")
    x = random_input(shape, param_dtype(model), device, cfg.channels_last and space.context != "token")

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
    """An estimate of the forward's minimum memory traffic: the input read, the output written (nothing
    when the op returns its input, as the identity does) and the parameters and floating-point buffers
    read, all at the compute dtype (bfloat16 with ``amp``, else the weights' dtype). Kernel-internal
    traffic (im2col, the expanded activations inside a token mixer) is not counted: a lower bound."""
    if aliases:  # the op returns its input (identity): nothing is read or written
        return 0
    weights = sum(p.numel() for p in model.parameters())
    weights += sum(b.numel() for b in model.buffers() if b.is_floating_point())
    elements = x.numel() + math.prod(out_shape) + weights
    return elements * compute_dtype(cfg.amp, model).itemsize


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
