"""Measured speed of a model's forward pass: latency at batch 1, throughput at ``cfg.batch_size`` and peak
memory, with their context.

The model is put in eval mode and runs on one fixed random input; every pass runs in its own inference
mode (and, with ``amp``, bf16 autocast) context, entered and left outside the timed region, so a pass costs
what one call costs (autocast re-casts the weights each pass); the passes are timed by :mod:`.timing`'s
protocol and throughput is ``batch / median``. The model is moved to ``cfg.device`` (and to channels-last
with ``channels_last``) in place, as :meth:`torch.nn.Module.to` does; its train/eval mode and the process'
CPU thread count are restored. Counting (parameters, MACs) is :mod:`.counting`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from pflnas.measure.context import MeasurementContext, SpeedConfig, check_int, measurement_context
from pflnas.measure.memory import MemoryStats, measure_peak_memory
from pflnas.measure.prepare import example_input, forward_mode, measuring, prepare_model
from pflnas.measure.timing import TimingStats, time_calls


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
    check_int("batch_size", batch_size, minimum=1)
    device = prepare_model(model, cfg)
    x = example_input(model, input_shape, batch_size, cfg, device)
    with measuring(model, cfg):
        times = time_calls(lambda: model(x), cfg, device, lambda: forward_mode(cfg, device))
    return TimingStats(tuple(times), measurement_context(cfg, batch_size, model))


def measure_speed(model: nn.Module, input_shape: Sequence[int], cfg: SpeedConfig) -> SpeedReport:
    """:func:`measure_latency`, :func:`measure_throughput` and :func:`measure_peak_memory` of ``model``."""
    return SpeedReport(
        latency=measure_latency(model, input_shape, cfg),
        throughput=measure_throughput(model, input_shape, cfg),
        memory=measure_peak_memory(model, input_shape, cfg),
    )
