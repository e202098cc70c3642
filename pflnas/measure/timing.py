"""The timing core every measurement uses: warm-up, then passes timed one by one, summarised robustly.

``warmup`` calls run untimed, then ``repeats`` calls are timed one by one, with Python's garbage collector
paused; each call runs in its own ``mode()`` context (e.g. inference mode), entered and left outside the
timed region. On CPU a call is timed with :func:`time.perf_counter_ns`; on CUDA between two
``torch.cuda.Event(enable_timing=True)`` followed by :func:`torch.cuda.synchronize`, so every timed call
starts on an idle device and its time includes kernel-launch overhead (what one request sees).
:class:`TimingStats` keeps every per-call time and summarises it (median, IQR, p10/p90), since one slow pass
must not move the number a report compares.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from pflnas.measure.context import MeasurementContext, SpeedConfig

Mode = Callable[[], contextlib.AbstractContextManager[object]]


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


def time_calls(
    fn: Callable[[], object], cfg: SpeedConfig, device: torch.device, mode: Mode | None = None
) -> list[float]:
    """Per-call times (ms) of ``fn()``: ``cfg.warmup`` untimed calls, then ``cfg.repeats`` timed one by one.

    Each call runs in its own ``mode()`` context (none by default); see the module doc. The caller places
    the model and sets its train/eval mode and ``cfg.threads``.
    """
    mode = mode or contextlib.nullcontext
    for _ in range(cfg.warmup):
        with mode():
            fn()
    sync(device)
    return _timed_calls(fn, cfg.repeats, device, mode)


def _timed_calls(fn: Callable[[], object], repeats: int, device: torch.device, mode: Mode) -> list[float]:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    times: list[float] = []
    try:
        for _ in range(repeats):
            with mode():
                times.append(_time_cuda(fn, device) if device.type == "cuda" else _time_cpu(fn))
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def _time_cpu(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6


def _time_cuda(fn: Callable[[], object], device: torch.device) -> float:
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize(device)
    return float(start.elapsed_time(end))


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (nothing to wait for on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
