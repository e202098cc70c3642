"""Peak memory of one forward pass, on CUDA from the allocator's statistics and on CPU from a tracker of
live tensor bytes.

CPU has no allocator statistics, and resident memory is too noisy to compare architectures, so the CPU
number counts the tensors the forward creates (:class:`LiveTensorBytes`): a like-for-like lower bound.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pflnas.measure.context import MeasurementContext, SpeedConfig, measurement_context
from pflnas.measure.prepare import example_input, forward_mode, measuring, prepare_model

CPU_MEMORY_METHOD = (
    "peak of live tensor bytes during the forward pass, tracked per ATen operator with a TorchDispatchMode "
    "(new output storages counted until freed; kernel-internal scratch and allocator overhead excluded)"
)
CUDA_MEMORY_METHOD = (
    "torch.cuda.max_memory_allocated during the forward pass, minus memory_allocated before it"
)


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
    x = example_input(model, input_shape, cfg.batch_size, cfg, device)
    context = measurement_context(cfg, cfg.batch_size, model)
    with measuring(model, cfg):
        with forward_mode(cfg, device):
            model(x)  # warm-up: lazy init, cuDNN algorithm choice
        if device.type == "cuda":
            return _cuda_peak(model, x, cfg, device, context)
        held = [*model.parameters(), *model.buffers(), x]
        baseline = _storage_bytes(held)
        with forward_mode(cfg, device), LiveTensorBytes(exclude=held) as tracker:
            out = model(x)
        del out
        return MemoryStats(baseline + tracker.peak, tracker.peak, baseline, CPU_MEMORY_METHOD, context)


def _cuda_peak(
    model: nn.Module, x: torch.Tensor, cfg: SpeedConfig, device: torch.device, context: MeasurementContext
) -> MemoryStats:
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with forward_mode(cfg, device):
        out = model(x)
        torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del out
    return MemoryStats(peak, max(peak - before, 0), before, CUDA_MEMORY_METHOD, context)


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


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


def _storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    seen: dict[tuple[str, int], int] = {}
    for t in tensors:
        seen[_storage_key(t)] = t.untyped_storage().nbytes()
    return sum(seen.values())
