"""Candidate operations: one registry, name -> factory(c_in, c_out, stride, affine)."""

from pflnas.ops import primitives as _primitives  # noqa: F401  (registers the built-in ops)
from pflnas.ops.registry import OpSpec, create_op, get_op, is_param_free, list_ops, register_op

__all__ = ["OpSpec", "create_op", "get_op", "is_param_free", "list_ops", "register_op"]
