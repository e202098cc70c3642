"""The op registry.

Every candidate operation is registered once under a name. The supernet, the derived networks,
found.json and the analysis all use these names. Each op states whether it is parameter-free at a given
stride (DARTS' ``skip_connect`` is the identity at stride 1 but a FactorizedReduce with parameters at 2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

OpFactory = Callable[[int, int, int, bool], nn.Module]


@dataclass(frozen=True)
class OpSpec:
    """A registered op.

    ``factory(c_in, c_out, stride, affine)`` builds the module. ``param_free_strides`` lists the strides
    at which the built module has no trainable parameters (and so, given the same input, gives the same
    output wherever it sits). ``is_zero`` marks the ``none`` op, whose output is all zeros.
    """

    name: str
    factory: OpFactory
    param_free_strides: frozenset[int]
    is_zero: bool = False
    description: str = ""

    def param_free(self, stride: int) -> bool:
        return stride in self.param_free_strides

    def build(self, c_in: int, c_out: int, stride: int, affine: bool = True) -> nn.Module:
        if stride not in (1, 2):
            raise ValueError(f"op {self.name!r}: stride must be 1 or 2, got {stride}")
        return self.factory(c_in, c_out, stride, affine)


_REGISTRY: dict[str, OpSpec] = {}


def register_op(
    name: str,
    *,
    param_free_strides: tuple[int, ...] = (),
    is_zero: bool = False,
    description: str = "",
) -> Callable[[OpFactory], OpFactory]:
    """Decorator: register ``factory`` under ``name``. Registering a name twice raises ``ValueError``."""

    def decorator(factory: OpFactory) -> OpFactory:
        if name in _REGISTRY:
            raise ValueError(f"op {name!r} is already registered")
        _REGISTRY[name] = OpSpec(name, factory, frozenset(param_free_strides), is_zero, description)
        return factory

    return decorator


def get_op(name: str) -> OpSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; known ops: {', '.join(sorted(_REGISTRY))}") from None


def list_ops() -> list[str]:
    return sorted(_REGISTRY)


def is_param_free(name: str, stride: int = 1) -> bool:
    return get_op(name).param_free(stride)


def create_op(name: str, c_in: int, c_out: int, stride: int, affine: bool = True) -> nn.Module:
    return get_op(name).build(c_in, c_out, stride, affine)
