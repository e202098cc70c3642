"""Model cost: parameter count and multiply-accumulates (MACs) of one forward pass.

MACs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` and reported as FLOPs / 2. As
usual for NAS papers' "multiply-adds", only convolutions, linear layers and matrix multiplies count;
BatchNorm, activations, pooling and additions do not. Counting runs the model in eval mode under
``torch.no_grad``, so an auxiliary head (which runs only in training) is never counted. The count depends
on shapes only, so the forward pass runs on the meta device (no arithmetic) with the model's own weights
swapped for meta stand-ins; a model that cannot run there is counted on a real zero input instead.
Counts need no device and no timing, so they are cheap enough for every report and every multi-trial step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from pflnas.measure.dtypes import param_dtype


def count_parameters(model: nn.Module, exclude_auxiliary: bool = True) -> int:
    """Number of parameters; with ``exclude_auxiliary``, those whose name contains ``auxiliary`` are
    left out (DARTS' ``count_parameters_in_MB`` rule, so the numbers compare with the papers')."""
    return sum(
        p.numel() for name, p in model.named_parameters() if not (exclude_auxiliary and "auxiliary" in name)
    )


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of one forward pass on an input of ``input_shape`` (batch included), in eval mode.

    The model is left unchanged (its training/eval mode is restored afterwards).
    """
    was_training = model.training
    model.eval()
    try:
        try:
            return _flops_on_meta(model, input_shape) // 2
        except (RuntimeError, NotImplementedError, TypeError):
            return _flops_on_zeros(model, input_shape) // 2
    finally:
        model.train(was_training)


def _count(model: nn.Module, run: Callable[[], object]) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        run()
    return int(counter.get_total_flops())


def _flops_on_meta(model: nn.Module, input_shape: Sequence[int]) -> int:
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    meta = {name: torch.empty_like(t, device="meta") for name, t in tensors.items()}
    x = torch.zeros(tuple(input_shape), device="meta", dtype=param_dtype(model))
    return _count(model, lambda: functional_call(model, meta, (x,)))


def _flops_on_zeros(model: nn.Module, input_shape: Sequence[int]) -> int:
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x = torch.zeros(tuple(input_shape), device=device, dtype=param_dtype(model))
    return _count(model, lambda: model(x))


def profile_model(
    model: nn.Module, input_shape: Sequence[int], exclude_auxiliary: bool = True
) -> dict[str, Any]:
    """The cost metrics of ``model`` as a flat dict: ``params``, ``macs``.

    New metrics (e.g. latency) are added as further keys; callers must not assume only these two.
    """
    return {
        "params": count_parameters(model, exclude_auxiliary=exclude_auxiliary),
        "macs": count_macs(model, input_shape),
    }
