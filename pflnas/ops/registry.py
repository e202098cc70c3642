"""The op registry: every candidate operation is registered once under a name.

The supernet, the derived networks, found.json and the analysis all use these names, and
:meth:`OpSpec.role` is the one answer to what an op is at a stride. One name has a factory per *context*
(:data:`CONTEXTS`) because the module around the spatial operation differs while the operation is the same.
The registry never imports torch: the built-in ops are declared in :mod:`pflnas.ops.catalog` with factories
named ``"module:function"`` (:class:`~pflnas.lazy.LazyFactory`), so the CLI and the record checks read
names, contexts and strides without loading torch; a module is imported on its first build.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from pflnas.names import name_hint

if TYPE_CHECKING:
    from torch import nn

# Where an op is placed; each context has its own factory for the same op name:
# - cell: an edge of a DARTS / NAS-Bench-201 cell (pre-activation ReLU-Op-BN, as DARTS' OPS).
# - bottleneck: the spatial operation of a ResNet bottleneck, between the 1x1 reduction and expansion convs,
#   on a ReLU'd input (post-activation Conv-BN-ReLU; pools are bare, as in the paper's R50-max).
# - token: the token mixer of a transformer block, on a [batch, H, W, dim] token grid.
CONTEXTS = ("cell", "bottleneck", "token")
ZERO, PARAM_FREE, TRAINABLE = "zero", "param_free", "trainable"
OpRole = Literal["zero", "param_free", "trainable"]


@dataclass(frozen=True)
class OpArgs:
    """The one argument every op factory takes: channels in/out, stride, BN affinity, attention heads."""

    c_in: int
    c_out: int
    stride: int = 1
    affine: bool = True
    heads: int = 1


OpFactory = Callable[[OpArgs], "nn.Module"]


@dataclass(frozen=True)
class OpSpec:
    """A registered op.

    ``factories[context](OpArgs)`` builds the module for a context. ``strides`` lists the strides the op
    can be placed at; ``param_free_strides`` those at which its spatial operation has no trainable
    parameters (and so, given the same input, gives the same output wherever it sits). ``is_zero`` marks
    the ``none`` op, whose output is all zeros.

    "Parameter-free" is a property of the spatial (or token-mixing) operation: in ``cell`` and
    ``bottleneck`` contexts a parameter-free op's module has no parameters at all; a ``token`` mixer also
    carries the channel projections every mixer has (attention's qkv/proj, the pooling mixer's
    expand/project linears).
    """

    name: str
    param_free_strides: frozenset[int]
    strides: frozenset[int] = frozenset({1, 2})
    is_zero: bool = False
    description: str = ""
    factories: Mapping[str, OpFactory] = field(default_factory=lambda: MappingProxyType({}))

    def contexts(self) -> tuple[str, ...]:
        return tuple(c for c in CONTEXTS if c in self.factories)

    def role(self, stride: int) -> OpRole:
        """What the op is at ``stride``: ``zero`` (the ``none`` op, at every stride: no connection,
        neither side), ``param_free`` or ``trainable`` (DARTS' ``skip_connect`` is the identity at stride 1
        but a FactorizedReduce with parameters at 2). The parameter-free share counts ``param_free`` among
        the non-``zero`` choices."""
        if self.is_zero:
            return "zero"
        return "param_free" if stride in self.param_free_strides else "trainable"

    def supports(self, context: str, stride: int = 1) -> bool:
        return context in self.factories and stride in self.strides

    def build(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        affine: bool = True,
        *,
        context: str = "cell",
        heads: int = 1,
    ) -> nn.Module:
        if context not in self.factories:
            have = ", ".join(self.contexts()) or "none"
            raise ValueError(f"op {self.name!r} has no {context!r} form (it has: {have})")
        if stride not in self.strides:
            raise ValueError(f"op {self.name!r}: stride must be one of {sorted(self.strides)}, got {stride}")
        return self.factories[context](OpArgs(c_in, c_out, stride, affine, heads))


_REGISTRY: dict[str, OpSpec] = {}


def register_op(
    name: str,
    *,
    context: str = "cell",
    param_free_strides: tuple[int, ...] = (),
    strides: tuple[int, ...] = (1, 2),
    is_zero: bool = False,
    description: str = "",
) -> Callable[[OpFactory], OpFactory]:
    """Decorator: register ``factory`` as the ``context`` form of op ``name``.

    Registering the same ``(name, context)`` twice raises ``ValueError``. A second context of an existing
    op must declare the same parameter-free strides and strides (it is the same operation).
    """
    if context not in CONTEXTS:
        raise ValueError(f"unknown op context {context!r}; contexts are {CONTEXTS}")

    def decorator(factory: OpFactory) -> OpFactory:
        spec = OpSpec(name, frozenset(param_free_strides), frozenset(strides), is_zero, description)
        old = _REGISTRY.get(name)
        if old is not None:
            if context in old.factories:
                raise ValueError(f"op {name!r} is already registered for context {context!r}")
            if (old.param_free_strides, old.strides, old.is_zero) != (
                spec.param_free_strides,
                spec.strides,
                spec.is_zero,
            ):
                raise ValueError(
                    f"op {name!r}: the {context!r} form must declare the same strides and "
                    "parameter-free strides as its other forms"
                )
            spec = dataclasses.replace(old, description=old.description or description)
        factories = {**spec.factories, context: factory}
        _REGISTRY[name] = dataclasses.replace(spec, factories=MappingProxyType(factories))
        return factory

    return decorator


def get_op(name: str) -> OpSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = name_hint(name, _REGISTRY)
        raise KeyError(f"unknown op {name!r}{hint}; known ops: {', '.join(sorted(_REGISTRY))}") from None


def list_ops(context: str | None = None) -> list[str]:
    """Registered op names, all or those with a form for ``context``."""
    return sorted(n for n, s in _REGISTRY.items() if context is None or context in s.factories)


def create_op(
    name: str,
    c_in: int,
    c_out: int,
    stride: int,
    affine: bool = True,
    *,
    context: str = "cell",
    heads: int = 1,
) -> nn.Module:
    return get_op(name).build(c_in, c_out, stride, affine, context=context, heads=heads)
