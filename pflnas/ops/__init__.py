"""Candidate operations: one registry, name -> factory(OpArgs) per context (cell, bottleneck, token).

Importing this package declares the built-in ops (:mod:`pflnas.ops.catalog`) without importing torch; the
modules that build them load on the first :func:`create_op`.
"""

from pflnas.ops import catalog as _catalog  # noqa: F401  (declares the built-in ops)
from pflnas.ops.registry import (
    CONTEXTS,
    PARAM_FREE,
    TRAINABLE,
    ZERO,
    OpArgs,
    OpRole,
    OpSpec,
    create_op,
    get_op,
    list_ops,
    register_op,
)

__all__ = [
    "CONTEXTS",
    "PARAM_FREE",
    "TRAINABLE",
    "ZERO",
    "OpArgs",
    "OpRole",
    "OpSpec",
    "create_op",
    "get_op",
    "list_ops",
    "register_op",
]
