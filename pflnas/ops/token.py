"""``token`` forms of the ops: the token mixer of a transformer block.

A mixer maps a token grid ``[batch, H, W, dim]`` to the same shape; the block around it is
``x + mixer(LN(x))`` then ``x + MLP(LN(x))``. ``attention`` is timm's multi-head self-attention
(qkv bias, fused scaled-dot-product kernel). The pooling mixers are the paper's parameter-free token
mixer (Han et al., ICLR 2022, ``EffLayer``): ``Linear(d, 3d) -> GELU -> 3x3 stride-1 pool over the grid ->
GELU -> Linear(3d, d)``; the mixing across tokens is the pool, which has no parameters.
"""

from __future__ import annotations

from timm.layers import Attention
from torch import Tensor, nn

from pflnas.ops.registry import OpArgs

POOL_MIXER_RATIO = 3


class AttentionMixer(nn.Module):
    """Multi-head self-attention over all tokens of the grid."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"attention: dim {dim} is not divisible into {heads} heads")
        self.attn = Attention(dim, num_heads=heads, qkv_bias=True)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, d = x.shape
        return self.attn(x.reshape(b, h * w, d)).reshape(b, h, w, d)


class PoolMixer(nn.Module):
    """Expand, pool over the token grid, project back (the paper's max-pool token mixer)."""

    def __init__(self, dim: int, pool: nn.Module, ratio: int = POOL_MIXER_RATIO):
        super().__init__()
        self.expand = nn.Linear(dim, dim * ratio)
        self.act = nn.GELU()
        self.pool = pool
        self.project = nn.Linear(dim * ratio, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self.expand(x))
        # [B, H, W, C] viewed as [B, C, H, W] is channels-last contiguous: pooling runs without a copy.
        y = self.pool(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.project(self.act(y))


def _check(name: str, a: OpArgs) -> int:
    if a.c_in != a.c_out or a.stride != 1:
        raise ValueError(f"token mixer {name!r} keeps dim and grid (stride 1); got {a}")
    return a.c_in


def attention(a: OpArgs) -> nn.Module:
    return AttentionMixer(_check("attention", a), a.heads)


def max_pool_3x3(a: OpArgs) -> nn.Module:
    return PoolMixer(_check("max_pool_3x3", a), nn.MaxPool2d(3, stride=1, padding=1))


def avg_pool_3x3(a: OpArgs) -> nn.Module:
    return PoolMixer(_check("avg_pool_3x3", a), nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False))
