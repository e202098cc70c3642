"""Registry-driven op tests: every registered op, in every context it has, at every stride it allows."""

import pytest
import torch
from torch import nn

from pflnas.ops import CONTEXTS, PARAM_FREE, TRAINABLE, create_op, get_op, list_ops, register_op
from pflnas.ops.registry import _REGISTRY

OPS = list_ops()
FORMS = [
    (name, ctx, s) for name in OPS for ctx in get_op(name).contexts() for s in sorted(get_op(name).strides)
]
SPATIAL = [(n, c, s) for n, c, s in FORMS if c != "token"]
TOKEN = [(n, 1) for n in list_ops("token")]  # token mixers keep the grid: stride 1 only


@pytest.mark.parametrize(("name", "context", "stride"), SPATIAL)
def test_spatial_shape_backward_and_param_free(name, context, stride):
    op = create_op(name, 8, 8, stride, affine=True, context=context)
    x = torch.randn(2, 8, 10, 10, requires_grad=True)
    y = op(x)
    assert y.shape == (2, 8, 10 // stride, 10 // stride)
    y.sum().backward()
    n_params = sum(p.numel() for p in op.parameters())
    assert (n_params == 0) == (get_op(name).role(stride) != TRAINABLE), (
        f"{name}@{context},{stride}: {n_params} params"
    )
    if not get_op(name).is_zero:
        assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "stride"), TOKEN)
def test_token_mixers_keep_the_grid_and_mix_tokens(name, stride):
    op = create_op(name, 12, 12, stride, context="token", heads=3)
    x = torch.randn(2, 5, 5, 12, requires_grad=True)
    y = op(x)
    assert y.shape == x.shape
    # Mixing: the output at one token depends on its neighbours.
    grad = torch.autograd.grad(y[0, 2, 2].sum(), x)[0]
    assert grad[0, 2, 3].abs().sum() > 0 and grad[1].abs().sum() == 0
    # A parameter-free mixer's only parameters are the per-token linear projections.
    mixing_params = [
        p for m in op.modules() if not isinstance(m, nn.Linear) for p in m.parameters(recurse=False)
    ]
    if get_op(name).role(stride) == PARAM_FREE:
        assert not mixing_params


@pytest.mark.parametrize("name", list_ops("cell"))
def test_cell_ops_on_odd_input_sizes(name):
    y = create_op(name, 4, 4, 2)(torch.randn(1, 4, 7, 7))
    assert y.shape == (1, 4, 4, 4)


def test_expected_param_free_tables():
    def free(context, stride):
        return {
            n
            for n in list_ops(context)
            if stride in get_op(n).strides and get_op(n).role(stride) == PARAM_FREE and not get_op(n).is_zero
        }

    assert free("cell", 1) == {"max_pool_3x3", "avg_pool_3x3", "skip_connect"}
    assert free("cell", 2) == {"max_pool_3x3", "avg_pool_3x3"}  # skip_connect@2 is a FactorizedReduce
    assert free("bottleneck", 1) == {"max_pool_3x3", "avg_pool_3x3", "identity"}
    assert free("bottleneck", 2) == {"max_pool_3x3", "avg_pool_3x3"}
    assert free("token", 1) == {"max_pool_3x3", "avg_pool_3x3"}


def test_the_paper_bottleneck_ops():
    # R50's Conv-BN-ReLU, a depthwise conv, and R50-hybrid's 2x2 avg-pool + conv in downsampling blocks.
    conv = create_op("conv_3x3", 16, 16, 2, context="bottleneck")
    assert [type(m) for m in conv] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert sum(p.numel() for p in conv.parameters()) == 16 * 16 * 9 + 2 * 16
    dw = create_op("dw_conv_3x3", 16, 16, 1, context="bottleneck")
    assert sum(p.numel() for p in dw.parameters()) == 16 * 9 + 2 * 16
    hybrid = create_op("avg_pool_2x2_conv_3x3", 16, 16, 2, context="bottleneck")
    assert isinstance(hybrid.pool, nn.AvgPool2d) and hybrid.pool.kernel_size == 2
    assert isinstance(create_op("max_pool_3x3", 16, 16, 2, context="bottleneck"), nn.MaxPool2d)


def test_stride_limits_and_missing_contexts_raise():
    with pytest.raises(ValueError, match="stride must be one of"):
        create_op("identity", 8, 8, 2, context="bottleneck")
    with pytest.raises(ValueError, match="stride must be one of"):
        create_op("avg_pool_2x2_conv_3x3", 8, 8, 1, context="bottleneck")
    with pytest.raises(ValueError, match="no 'cell' form"):
        create_op("attention", 8, 8, 1)
    with pytest.raises(ValueError, match="stride 1"):
        create_op("max_pool_3x3", 8, 8, 2, context="token")


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_op("conv_3x3")(lambda a: nn.Identity())
    with pytest.raises(ValueError, match="already registered"):
        register_op("max_pool_3x3", context="token", param_free_strides=(1, 2))(lambda a: nn.Identity())
    with pytest.raises(ValueError, match="same strides"):
        register_op("conv_1x1", context="bottleneck", param_free_strides=(1,))(lambda a: nn.Identity())
    with pytest.raises(ValueError, match="unknown op context"):
        register_op("x", context="edge")
    assert "conv_3x3" in _REGISTRY and "bottleneck" not in get_op("conv_1x1").contexts()


def test_every_context_has_ops():
    assert all(list_ops(c) for c in CONTEXTS)


def test_unknown_op_lists_known():
    with pytest.raises(KeyError, match="known ops"):
        get_op("conv_9x9")


def test_avg_pool_excludes_padding():
    y = create_op("avg_pool_3x3", 1, 1, 1)(torch.ones(1, 1, 4, 4))
    assert torch.allclose(y, torch.ones_like(y))  # count_include_pad=False keeps borders at 1
