"""Candidate operations: one registry, name -> factory(OpArgs) per context (cell, bottleneck, token)."""

from pflnas.ops import bottleneck as _bottleneck  # noqa: F401  (registers the bottleneck forms)
from pflnas.ops import primitives as _primitives  # noqa: F401  (registers the built-in ops)
from pflnas.ops import token as _token  # noqa: F401  (registers the token mixers)
from pflnas.ops.registry import (
    CONTEXTS,
    OpArgs,
    OpSpec,
    create_op,
    get_op,
    is_param_free,
    list_ops,
    register_op,
)

__all__ = ["CONTEXTS", "OpArgs", "OpSpec", "create_op", "get_op", "is_param_free", "list_ops", "register_op"]
