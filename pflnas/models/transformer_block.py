"""Vision transformers with per-block token mixers: the derived networks of ``vit_block`` and
``pit_block`` spaces (ViT-S, ViT-S-max, PiT-S, PiT-S-max) and the body of their supernets.

Layer for layer as the paper's ``vit_pf.py`` / ``pit_pf.py``: no class token, a learned positional
embedding, pre-norm blocks (LayerNorm eps 1e-6, timm ``Mlp``), final LayerNorm, average over tokens,
linear head; PiT downsamples between stages with a stride-2 depthwise-grouped 3x3 conv that doubles the
dim. Tokens travel as a ``[batch, H, W, dim]`` grid so a pooling mixer can work on it directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import Tensor, nn

from pflnas.models.resnet_block import SlotFactory, drop_rates
from pflnas.spaces.skeletons import PiTSkeleton, ViTSkeleton


class TokenBlock(nn.Module):
    """``x + mixer(LN(x))`` then ``x + MLP(LN(x))``, with stochastic depth on both branches."""

    def __init__(self, dim: int, mlp_ratio: float, mixer: nn.Module, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, weights: Tensor | None = None) -> Tensor:
        y = self.norm1(x)
        y = self.mixer(y) if weights is None else self.mixer(y, weights)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _check_input(x: Tensor, image_size: int) -> None:
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        raise ValueError(
            f"this network was built for {image_size}x{image_size} inputs (its positional embedding "
            f"fixes the grid); got {tuple(x.shape[-2:])}"
        )


class ViTBlockNet(nn.Module):
    """Patch embedding, ``depth`` token blocks (``self.blocks``), norm, token average, head."""

    def __init__(
        self,
        skeleton: ViTSkeleton,
        slot: SlotFactory,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 224,
        drop_path: float = 0.0,
    ):
        super().__init__()
        d, p, g = skeleton.dim, skeleton.patch(image_size), skeleton.grid(image_size)
        self.image_size = image_size
        self.patch_embed = nn.Conv2d(in_channels, d, p, stride=p)
        self.pos_embed = nn.Parameter(torch.zeros(1, g, g, d))
        self.sites = skeleton.sites()
        rates = drop_rates(drop_path, len(self.sites))
        self.blocks = nn.ModuleList(
            TokenBlock(d, skeleton.mlp_ratio, slot(s, d, skeleton.heads), rates[s.index]) for s in self.sites
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, num_classes)
        self.num_features = d
        _init(self)
        trunc_normal_(self.pos_embed, std=0.02)

    def forward_features(self, x: Tensor, weights: Sequence[Tensor] | None = None) -> Tensor:
        _check_input(x, self.image_size)
        x = self.patch_embed(x).permute(0, 2, 3, 1) + self.pos_embed
        for i, block in enumerate(self.blocks):
            x = block(x) if weights is None else block(x, weights[i])
        return self.norm(x)

    def forward(self, x: Tensor, weights: Sequence[Tensor] | None = None) -> Tensor:
        return self.head(self.forward_features(x, weights).mean(dim=(1, 2)))


class PiTBlockNet(nn.Module):
    """Overlapping patch embedding, stages of token blocks joined by conv pooling, norm, average, head."""

    def __init__(
        self,
        skeleton: PiTSkeleton,
        slot: SlotFactory,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 224,
        drop_path: float = 0.0,
    ):
        super().__init__()
        dims = skeleton.dims()
        p, s = skeleton.patch(image_size)
        g = skeleton.grid(image_size)
        self.image_size = image_size
        self.patch_embed = nn.Conv2d(in_channels, dims[0], p, stride=s)
        self.pos_embed = nn.Parameter(torch.zeros(1, dims[0], g, g))
        self.sites = skeleton.sites()
        rates = drop_rates(drop_path, len(self.sites))
        self.blocks = nn.ModuleList(
            TokenBlock(
                dims[t.stage],
                skeleton.mlp_ratio,
                slot(t, dims[t.stage], skeleton.heads[t.stage]),
                rates[t.index],
            )
            for t in self.sites
        )
        self.pools = nn.ModuleList(
            nn.Conv2d(dims[i], dims[i + 1], 3, stride=2, padding=1, groups=dims[i])
            for i in range(len(dims) - 1)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        self.num_features = dims[-1]
        _init(self)
        trunc_normal_(self.pos_embed, std=0.02)

    def forward_features(self, x: Tensor, weights: Sequence[Tensor] | None = None) -> Tensor:
        _check_input(x, self.image_size)
        x = (self.patch_embed(x) + self.pos_embed).permute(0, 2, 3, 1)
        stage = 0
        for i, (site, block) in enumerate(zip(self.sites, self.blocks)):
            if site.stage != stage:  # conv pooling between stages works on [B, C, H, W]
                x = self.pools[stage](x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
                stage = site.stage
            x = block(x) if weights is None else block(x, weights[i])
        return self.norm(x)

    def forward(self, x: Tensor, weights: Sequence[Tensor] | None = None) -> Tensor:
        return self.head(self.forward_features(x, weights).mean(dim=(1, 2)))
