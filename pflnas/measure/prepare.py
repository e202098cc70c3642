"""Setting a model and its input up for measuring: device and memory format, the example input, the CPU
thread count, eval mode and the forward pass's context.

Network timings, the per-op benchmark and the latency table all set up the same way, so that their numbers
differ only by what is measured; every setting is restored afterwards (the model stays on its new device).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
from torch import nn

from pflnas.measure.context import SpeedConfig, check_device
from pflnas.measure.dtypes import param_dtype


class Site(Protocol):
    """Where an op runs (:class:`~pflnas.spaces.skeletons.OpSite` has these fields)."""

    channels: int
    height: int
    width: int


def prepare_model(model: nn.Module, cfg: SpeedConfig) -> torch.device:
    """Move ``model`` to ``cfg.device`` (and channels-last with ``cfg.channels_last``) in place."""
    device = check_device(cfg.device)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return device


def op_input_shape(context: str, site: Site, batch: int) -> tuple[int, ...]:
    """The input shape of an op of ``context`` at ``site``: ``[batch, H, W, dim]`` for token mixers,
    ``[batch, C, H, W]`` for cell and bottleneck ops."""
    if context == "token":
        return (batch, site.height, site.width, site.channels)
    return (batch, site.channels, site.height, site.width)


def random_input(
    shape: Sequence[int], dtype: torch.dtype, device: torch.device, channels_last: bool
) -> torch.Tensor:
    """A fixed random input (seed 0, drawn on the CPU) of ``shape``, channels-last when asked and 4-D."""
    x = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def example_input(
    model: nn.Module, input_shape: Sequence[int], batch: int, cfg: SpeedConfig, device: torch.device
) -> torch.Tensor:
    """:func:`random_input` at the model's dtype, with ``input_shape``'s batch dimension replaced."""
    if len(input_shape) < 1:
        raise ValueError("input_shape must include a batch dimension")
    shape = (batch, *(int(s) for s in input_shape[1:]))
    return random_input(shape, param_dtype(model), device, cfg.channels_last)


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """``n`` intra-op CPU threads for the duration; the previous count restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def measuring(model: nn.Module, cfg: SpeedConfig) -> Iterator[None]:
    """Eval mode and ``cfg.threads`` CPU threads for the duration; both restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with threads(cfg.threads):
            yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def forward_mode(cfg: SpeedConfig, device: torch.device) -> Iterator[None]:
    """The context of a timed forward pass: inference mode and, with ``cfg.amp``, bf16 autocast."""
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
        yield
