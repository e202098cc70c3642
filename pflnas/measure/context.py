"""How to measure (:class:`SpeedConfig`) and what a number was measured under (:class:`MeasurementContext`).

Timings mean little without their device, threads, dtype and load, so every measurement keeps its context
next to it; both are plain frozen records so that reports and caches can store them as JSON.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pflnas.config.limits import threads_check
from pflnas.errors import ConfigError
from pflnas.measure.dtypes import dtype_name, param_dtype
from pflnas.options import SPEED_BATCH_SIZE, SPEED_REPEATS, SPEED_WARMUP

DEVICES = ("cpu", "cuda")


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
            check_int(name, getattr(self, name), minimum=1)
        ok, message = threads_check("threads", self.threads)
        if not ok:
            raise ConfigError(message)
        check_int("warmup", self.warmup, minimum=0)
        check_device(self.device)


def check_int(name: str, value: Any, minimum: int) -> None:
    """A :class:`ConfigError` naming ``name`` unless ``value`` is an int (not a bool) >= ``minimum``."""
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
    weights = dtype_name(param_dtype(model)) if model is not None else "float32"
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


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None
