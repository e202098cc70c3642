"""Registry-driven op tests: every registered op at stride 1 and 2."""

import pytest
import torch

from pflnas.ops import create_op, get_op, list_ops, register_op
from pflnas.ops.registry import _REGISTRY

OPS = list_ops()


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("stride", [1, 2])
def test_shape_backward_and_param_free(name, stride):
    op = create_op(name, 8, 8, stride, affine=True)
    x = torch.randn(2, 8, 10, 10, requires_grad=True)
    y = op(x)
    assert y.shape == (2, 8, 10 // stride, 10 // stride)
    y.sum().backward()
    n_params = sum(p.numel() for p in op.parameters())
    assert (n_params == 0) == get_op(name).param_free(stride), f"{name}@{stride}: {n_params} params"
    if not get_op(name).is_zero:
        assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", OPS)
def test_odd_input_sizes(name):
    y = create_op(name, 4, 4, 2)(torch.randn(1, 4, 7, 7))
    assert y.shape == (1, 4, 4, 4)


def test_expected_param_free_table():
    free = {n for n in OPS if get_op(n).param_free(1) and not get_op(n).is_zero}
    assert free == {"max_pool_3x3", "avg_pool_3x3", "skip_connect"}
    assert not get_op("skip_connect").param_free(2)  # FactorizedReduce
    assert get_op("max_pool_3x3").param_free(2)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_op("conv_3x3")(lambda c_in, c_out, stride, affine: torch.nn.Identity())
    assert "conv_3x3" in _REGISTRY


def test_unknown_op_lists_known():
    with pytest.raises(KeyError, match="known ops"):
        get_op("conv_9x9")


def test_avg_pool_excludes_padding():
    y = create_op("avg_pool_3x3", 1, 1, 1)(torch.ones(1, 1, 4, 4))
    assert torch.allclose(y, torch.ones_like(y))  # count_include_pad=False keeps borders at 1
