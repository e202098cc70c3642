"""The dtypes of a measurement: the weights', the one arithmetic runs in, and their names in reports.

Inputs are made at the weights' dtype and traffic is counted at the compute dtype, so every measuring module
asks these three functions rather than guessing from the first parameter in its own way.
"""

from __future__ import annotations

import torch
from torch import nn


def param_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first parameter when it is floating point, else float32."""
    first = next(model.parameters(), None)
    return first.dtype if first is not None and first.is_floating_point() else torch.float32


def compute_dtype(amp: bool, model: nn.Module | None = None) -> torch.dtype:
    """bfloat16 under autocast (``amp``), else the weights' dtype (float32 without a model)."""
    if amp:
        return torch.bfloat16
    return torch.float32 if model is None else param_dtype(model)


def dtype_name(dtype: torch.dtype) -> str:
    """``float32`` for ``torch.float32``."""
    return str(dtype).removeprefix("torch.")
