"""Measured speed of a model's forward pass: latency, throughput and peak memory, with their context.

Counting (parameters, MACs) lives in :mod:`pflnas.profile`; this module times real forward passes.

Timing protocol (:func:`measure_latency` at batch 1, :func:`measure_throughput` at ``cfg.batch_size``): the
model is put in eval mode and runs on one fixed random input; every pass runs in its own
:func:`torch.inference_mode` (and, with ``amp``, bf16 :func:`torch.autocast`) context, entered and left
outside the timed region, so a pass costs what one call costs (autocast re-casts the weights each pass).
``warmup`` passes run untimed, then ``repeats`` passes are timed one by one, with Python's garbage
collector paused. On CPU each pass is timed with :func:`time.perf_counter_ns`; on CUDA with a pair of
``torch.cuda.Event(enable_timing=True)`` around the pass, followed by :func:`torch.cuda.synchronize`, so
every timed pass starts on an idle device and its time includes kernel-launch overhead (what one request
sees). :class:`TimingStats` keeps every per-pass
time and summarises them robustly (median, IQR, p10/p90); throughput is ``batch / median``.

The model is moved to ``cfg.device`` (and to channels-last with ``channels_last``) in place, as
:meth:`torch.nn.Module.to` does; its train/eval mode and the process' CPU thread count are restored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import platform
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pflnas.config.limits import threads_check
from pflnas.errors import ConfigError
from pflnas.options import SPEED_BATCH_SIZE, SPEED_REPEATS, SPEED_WARMUP

DEVICES = ("cpu", "cuda")

CPU_MEMORY_METHOD = (
    "peak of live tensor bytes during the forward pass, tracked per ATen operator with a TorchDispatchMode "
    "(new output storages counted until freed; kernel-internal scratch and allocator overhead excluded)"
)
CUDA_MEMORY_METHOD = (
    "torch.cuda.max_memory_allocated during the forward pass, minus memory_allocated before it"
)


# --- configuration and context -------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeedConfig:
    """How to measure: device, batch size of the throughput run, warm-up / timed passes, numerics, threads.

    ``amp`` runs the forward under bf16 autocast; ``channels_last`` converts the model and the input to
    channels-last; ``threads`` is the intra-op CPU thread count (:func:`torch.set_num_threads`) used while
    measuring. Invalid values, and ``device="cuda"`` without a CUDA device, raise :class:`ConfigError`.
    """

    device: str = "cpu"
    batch_size: int = SPEED_BATCH_SIZE
    warmup: int = SPEED_WARMUP
    repeats: int = SPEED_REPEATS
    amp: bool = False
    channels_last: bool = False
    threads: int = field(default_factory=torch.get_num_threads)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        for name in ("batch_size", "repeats", "threads"):
            _check_int(name, getattr(self, name), minimum=1)
        ok, message = threads_check("threads", self.threads)
        if not ok:
            raise ConfigError(message)
        _check_int("warmup", self.warmup, minimum=0)
        check_device(self.device)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{name} must be {what}, got {value!r}")


def check_device(device: str) -> torch.device:
    """``device`` as a :class:`torch.device`; ``cuda`` without an available CUDA device is a ConfigError."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available; use --device cpu")
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    return torch.device(device)


def cpu_name() -> str:
    """The CPU model (``model name`` in /proc/cpuinfo, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(torch.cuda.current_device())
    return cpu_name()


@dataclass(frozen=True)
class MeasurementContext:
    """What a number was measured under (kept next to every measurement)."""

    device: str  # "cpu" or "cuda"
    device_name: str  # the CPU model or the CUDA device name
    threads: int  # intra-op CPU threads
    torch_version: str
    dtype: str  # "float32", or e.g. "bfloat16 autocast (float32 weights)"
    memory_format: str  # "contiguous" or "channels_last"
    batch_size: int
    warmup: int
    repeats: int
    timer: str  # "time.perf_counter_ns" or "torch.cuda.Event"
    load_average: float | None = None  # the 1-minute system load when measured (other work skews CPU times)
    cpu_count: int | None = None  # logical CPUs of the machine

    @property
    def contended(self) -> bool:
        """Whether the CPU looked oversubscribed (1-minute load above the CPU count, this run included):
        CPU timings are then unreliable, OpenMP threads in particular spin-wait for descheduled peers."""
        if self.device != "cpu" or self.load_average is None or self.cpu_count is None:
            return False
        return self.load_average > self.cpu_count

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line: ``cpu (AMD EPYC), 2 threads, torch 2.4.0, float32, contiguous, warmup 10, repeats 30``
        (and the system load when known)."""
        return (
            f"{self.device} ({self.device_name}), {self.threads} threads, torch {self.torch_version}, "
            f"{self.dtype}, {self.memory_format}, warmup {self.warmup}, repeats {self.repeats}"
            + ("" if self.load_average is None else f", load {self.load_average}")
        )


def measurement_context(
    cfg: SpeedConfig, batch_size: int, model: nn.Module | None = None
) -> MeasurementContext:
    """The context of a measurement of ``model`` (for its weights' dtype) at ``batch_size`` under ``cfg``."""
    weights = _dtype_name(_param_dtype(model)) if model is not None else "float32"
    return MeasurementContext(
        device=cfg.device,
        device_name=device_name(cfg.device),
        threads=cfg.threads,
        torch_version=torch.__version__,
        dtype=f"bfloat16 autocast ({weights} weights)" if cfg.amp else weights,
        memory_format="channels_last" if cfg.channels_last else "contiguous",
        batch_size=batch_size,
        warmup=cfg.warmup,
        repeats=cfg.repeats,
        timer="torch.cuda.Event" if cfg.device == "cuda" else "time.perf_counter_ns",
        load_average=_load_average(),
        cpu_count=os.cpu_count(),
    )


# --- results -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimingStats:
    """Per-pass times of one timed run (milliseconds) and their summary statistics.

    Percentiles use numpy's default (linear) interpolation; ``std`` is the sample standard deviation
    (``ddof=1``; 0.0 for a single pass); ``iqr`` is p75 - p25.
    """

    times_ms: tuple[float, ...]
    context: MeasurementContext

    def __post_init__(self) -> None:
        if not self.times_ms:
            raise ValueError("TimingStats needs at least one time")

    @cached_property
    def _a(self) -> np.ndarray:
        return np.asarray(self.times_ms, dtype=np.float64)

    @property
    def batch_size(self) -> int:
        return self.context.batch_size

    @property
    def median(self) -> float:
        return float(np.median(self._a))

    @property
    def mean(self) -> float:
        return float(np.mean(self._a))

    @property
    def std(self) -> float:
        return float(np.std(self._a, ddof=1)) if self._a.size > 1 else 0.0

    @property
    def min(self) -> float:
        return float(np.min(self._a))

    @property
    def max(self) -> float:
        return float(np.max(self._a))

    @property
    def p10(self) -> float:
        return float(np.percentile(self._a, 10))

    @property
    def p90(self) -> float:
        return float(np.percentile(self._a, 90))

    @property
    def iqr(self) -> float:
        p25, p75 = np.percentile(self._a, [25, 75])
        return float(p75 - p25)

    @property
    def throughput(self) -> float:
        """Samples per second at the median time: ``batch_size / (median / 1000)``."""
        return self.batch_size / (self.median / 1e3) if self.median > 0 else float("inf")

    def to_dict(self, include_times: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "batch_size": self.batch_size,
            "median_ms": self.median,
            "mean_ms": self.mean,
            "std_ms": self.std,
            "min_ms": self.min,
            "max_ms": self.max,
            "p10_ms": self.p10,
            "p90_ms": self.p90,
            "iqr_ms": self.iqr,
            "images_per_s": self.throughput,
        }
        if include_times:
            d["times_ms"] = list(self.times_ms)
        return d


@dataclass(frozen=True)
class MemoryStats:
    """Peak memory of one forward pass (bytes).

    ``baseline_bytes`` is what was held before the pass, ``activation_bytes`` the most the pass added on top
    of it, and ``peak_bytes = baseline_bytes + activation_bytes``. On CUDA the baseline is everything
    allocated on the device (weights, input, anything else the process holds there); on CPU it is the
    model's parameters and buffers plus the input. ``method`` says how the peak was measured.
    """

    peak_bytes: int
    activation_bytes: int
    baseline_bytes: int
    method: str
    context: MeasurementContext

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_bytes": self.peak_bytes,
            "activation_bytes": self.activation_bytes,
            "baseline_bytes": self.baseline_bytes,
            "batch_size": self.context.batch_size,
            "method": self.method,
        }


@dataclass(frozen=True)
class SpeedReport:
    """Latency (batch 1), throughput (batch ``cfg.batch_size``) and peak memory (same batch) of one model."""

    latency: TimingStats
    throughput: TimingStats
    memory: MemoryStats

    @property
    def context(self) -> MeasurementContext:
        """The throughput run's context (the latency run's differs only in ``batch_size == 1``)."""
        return self.throughput.context

    def to_dict(self, include_times: bool = True) -> dict[str, Any]:
        return {
            "latency": self.latency.to_dict(include_times),
            "throughput": self.throughput.to_dict(include_times),
            "memory": self.memory.to_dict(),
        }


# --- measuring -----------------------------------------------------------------------------------------
def prepare_model(model: nn.Module, cfg: SpeedConfig) -> torch.device:
    """Move ``model`` to ``cfg.device`` (and channels-last with ``cfg.channels_last``) in place."""
    device = check_device(cfg.device)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return device


def measure_latency(model: nn.Module, input_shape: Sequence[int], cfg: SpeedConfig) -> TimingStats:
    """Per-pass forward time at batch 1 (``input_shape`` includes a batch dimension, which is replaced)."""
    return time_forward(model, input_shape, cfg, batch_size=1)


def measure_throughput(model: nn.Module, input_shape: Sequence[int], cfg: SpeedConfig) -> TimingStats:
    """Per-pass forward time at batch ``cfg.batch_size``; ``.throughput`` gives samples per second."""
    return time_forward(model, input_shape, cfg, batch_size=cfg.batch_size)


def time_forward(
    model: nn.Module, input_shape: Sequence[int], cfg: SpeedConfig, batch_size: int
) -> TimingStats:
    """``cfg.warmup`` untimed then ``cfg.repeats`` timed forward passes at ``batch_size`` (see module doc)."""
    _check_int("batch_size", batch_size, minimum=1)
    device = prepare_model(model, cfg)
    x = _example_input(model, input_shape, batch_size, cfg, device)
    with _measuring(model, cfg):
        for _ in range(cfg.warmup):
            with _forward_mode(cfg, device):
                model(x)
        _sync(device)
        times = _timed_passes(model, x, cfg, device)
    return TimingStats(tuple(times), measurement_context(cfg, batch_size, model))


def _timed_passes(model: nn.Module, x: torch.Tensor, cfg: SpeedConfig, device: torch.device) -> list[float]:
    return _timed_calls(lambda: model(x), cfg.repeats, device, lambda: _forward_mode(cfg, device))


def time_calls(
    fn: Callable[[], object],
    cfg: SpeedConfig,
    device: torch.device,
    mode: Callable[[], contextlib.AbstractContextManager[object]] | None = None,
) -> list[float]:
    """Per-call times (ms) of ``fn()``: ``cfg.warmup`` untimed calls, then ``cfg.repeats`` timed one by one.

    The protocol of :func:`time_forward` for any pass (e.g. a forward and backward pass): each call runs in
    its own ``mode()`` context (e.g. ``lambda: forward_mode(cfg, device)``; none by default), entered and
    left outside the timed region; the garbage collector is paused while timing; CPU calls are timed with
    :func:`time.perf_counter_ns`, CUDA calls between two CUDA events followed by a synchronize. The caller
    places the model and sets its train/eval mode and ``cfg.threads``.
    """
    mode = mode or contextlib.nullcontext
    for _ in range(cfg.warmup):
        with mode():
            fn()
    _sync(device)
    return _timed_calls(fn, cfg.repeats, device, mode)


def forward_mode(cfg: SpeedConfig, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """The context of a timed forward pass: inference mode and, with ``cfg.amp``, bf16 autocast."""
    return _forward_mode(cfg, device)


def _timed_calls(
    fn: Callable[[], object],
    repeats: int,
    device: torch.device,
    mode: Callable[[], contextlib.AbstractContextManager[object]],
) -> list[float]:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    times: list[float] = []
    try:
        for _ in range(repeats):
            with mode():
                if device.type == "cuda":
                    start = torch.cuda.Event(enable_timing=True)
                    end = torch.cuda.Event(enable_timing=True)
                    start.record()
                    fn()
                    end.record()
                    torch.cuda.synchronize(device)
                    times.append(float(start.elapsed_time(end)))
                else:
                    t0 = time.perf_counter_ns()
                    fn()
                    times.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def measure_peak_memory(model: nn.Module, input_shape: Sequence[int], cfg: SpeedConfig) -> MemoryStats:
    """Peak memory of one forward pass at batch ``cfg.batch_size`` (run after one untimed warm-up pass).

    CUDA: :func:`torch.cuda.reset_peak_memory_stats`, then ``max_memory_allocated`` during the pass; the
    activation part is that peak minus ``memory_allocated`` before the pass (weights, input and anything
    else held on the device). Caching-allocator block rounding is included, the cuDNN/cuBLAS workspaces
    that the allocator serves too.

    CPU (no allocator statistics exist): the peak of *live tensor bytes* during the pass. A
    :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees every ATen operator the forward runs;
    each new (non-aliasing) output storage is added when created and subtracted when it is freed (a weak
    reference to the storage), and the running maximum is the activation part. Views and in-place results
    allocate nothing and are not counted; the weights, buffers and input are the baseline. Not included:
    memory an operator allocates and frees inside its kernel (e.g. oneDNN scratch / reorder buffers),
    allocator rounding and fragmentation, and non-tensor Python objects. So it is a lower bound on what
    the process' resident memory grows by, and a like-for-like number across architectures. With ``amp``
    the bf16 copies of the weights that autocast makes during the pass count as activation memory.
    """
    device = prepare_model(model, cfg)
    x = _example_input(model, input_shape, cfg.batch_size, cfg, device)
    context = measurement_context(cfg, cfg.batch_size, model)
    with _measuring(model, cfg):
        with _forward_mode(cfg, device):
            model(x)  # warm-up: lazy init, cuDNN algorithm choice
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            with _forward_mode(cfg, device):
                out = model(x)
                torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
            del out
            return MemoryStats(peak, max(peak - before, 0), before, CUDA_MEMORY_METHOD, context)
        held = [*model.parameters(), *model.buffers(), x]
        baseline = _storage_bytes(held)
        with _forward_mode(cfg, device), LiveTensorBytes(exclude=held) as tracker:
            out = model(x)
        del out
        return MemoryStats(baseline + tracker.peak, tracker.peak, baseline, CPU_MEMORY_METHOD, context)


def measure_speed(model: nn.Module, input_shape: Sequence[int], cfg: SpeedConfig) -> SpeedReport:
    """:func:`measure_latency`, :func:`measure_throughput` and :func:`measure_peak_memory` of ``model``."""
    return SpeedReport(
        latency=measure_latency(model, input_shape, cfg),
        throughput=measure_throughput(model, input_shape, cfg),
        memory=measure_peak_memory(model, input_shape, cfg),
    )


class LiveTensorBytes(TorchDispatchMode):
    """While active, the bytes of tensor storages created by ATen operators and still alive: ``live`` now,
    ``peak`` the most at any point. An operator output counts when its storage is new: not the storage of
    one of the operator's inputs (views, in-place and ``out=`` results, a ``.to`` that returns its input), not
    one already counted, and not one of ``exclude``'s. See :func:`measure_peak_memory` for what this does
    not see."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[tuple[str, int], weakref.ref] = {}
        self._exclude = {_storage_key(t) for t in exclude}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {_storage_key(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t, inputs)
        return out

    def _track(self, t: torch.Tensor, inputs: set[tuple[str, int]]) -> None:
        key = _storage_key(t)
        if key in inputs or key in self._exclude:
            return
        known = self._refs.get(key)
        if known is not None and known() is not None:
            return
        storage = t.untyped_storage()
        nbytes = storage.nbytes()
        if nbytes == 0:
            return
        self._refs[key] = weakref.ref(storage, lambda ref, key=key, n=nbytes: self._free(key, n, ref))
        self.live += nbytes
        self.peak = max(self.peak, self.live)

    def _free(self, key: tuple[str, int], nbytes: int, ref: weakref.ref) -> None:
        if self._refs.get(key) is ref:
            del self._refs[key]
            self.live -= nbytes


# --- helpers -------------------------------------------------------------------------------------------
def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


def _storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    seen: dict[tuple[str, int], int] = {}
    for t in tensors:
        seen[_storage_key(t)] = t.untyped_storage().nbytes()
    return sum(seen.values())


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _param_dtype(model: nn.Module) -> torch.dtype:
    first = next(model.parameters(), None)
    return first.dtype if first is not None and first.is_floating_point() else torch.float32


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _example_input(
    model: nn.Module, input_shape: Sequence[int], batch: int, cfg: SpeedConfig, device: torch.device
) -> torch.Tensor:
    if len(input_shape) < 1:
        raise ValueError("input_shape must include a batch dimension")
    shape = (batch, *(int(s) for s in input_shape[1:]))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=_param_dtype(model))
    x = x.to(device)
    if cfg.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@contextlib.contextmanager
def _measuring(model: nn.Module, cfg: SpeedConfig) -> Iterator[None]:
    """Eval mode and ``cfg.threads`` CPU threads for the duration; both restored afterwards."""
    was_training, threads = model.training, torch.get_num_threads()
    model.eval()
    torch.set_num_threads(cfg.threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)


@contextlib.contextmanager
def _forward_mode(cfg: SpeedConfig, device: torch.device) -> Iterator[None]:
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
        yield


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
