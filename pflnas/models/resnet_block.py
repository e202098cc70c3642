"""ResNet with per-block spatial ops: the derived networks of ``resnet_block`` spaces (R50, R50-max,
R50-hybrid) and the body of their supernet.

The structure follows torchvision's ResNet-50 v1.5 (and the paper's ``resnet_pf.py``) module for module, so
R50 has exactly torchvision's 25,557,032 parameters and loads its weights after renaming
(``layer{s}.{j}.conv2`` / ``bn2`` -> ``blocks.{i}.spatial.conv`` / ``spatial.bn``, ``layer{s}.{j}.*`` ->
``blocks.{i}.*``). Each bottleneck's spatial slot is whatever module the caller builds for that block: the
chosen op (derived network) or a mixed op over the candidates (supernet).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from timm.layers import DropPath
from torch import Tensor, nn

from pflnas.spaces.skeletons import SMALL_INPUT, BlockSite, ResNetSkeleton

SlotFactory = Callable[[BlockSite, int, int], nn.Module]  # (site, channels, heads) -> module


def drop_rates(rate: float, n: int) -> list[float]:
    """Stochastic-depth rate per block: linear from 0 to ``rate`` over ``n`` blocks (timm's rule)."""
    return [float(r) for r in torch.linspace(0, rate, n)] if n > 1 and rate > 0 else [0.0] * n


class Bottleneck(nn.Module):
    """``1x1 conv-BN-ReLU -> spatial -> 1x1 conv-BN``, plus the (projected) shortcut, then ReLU."""

    def __init__(
        self, c_in: int, width: int, c_out: int, stride: int, spatial: nn.Module, drop_path: float = 0.0
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.spatial = spatial
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, weights: Tensor | None = None) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.spatial(out) if weights is None else self.spatial(out, weights)
        out = self.drop_path(self.bn3(self.conv3(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act3(out + shortcut)


class ResNetBlockNet(nn.Module):
    """Stem, ``sum(depths)`` bottlenecks (``self.blocks``, in network order), global pool, linear head.

    ``drop_path`` is the stochastic-depth rate of the last block (timm's rule: linear from 0 over blocks).

    ``forward(x)`` runs the blocks' own slots; ``forward(x, weights)`` passes ``weights[i]`` to block
    ``i``'s slot (the supernet's mixing weights).
    """

    def __init__(
        self,
        skeleton: ResNetSkeleton,
        slot: SlotFactory,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 224,
        drop_path: float = 0.0,
    ):
        super().__init__()
        c = skeleton.stem_width
        if image_size >= SMALL_INPUT:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, c, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:  # small inputs: the usual CIFAR stem (no 4x downsampling)
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)
            )
        widths = skeleton.stage_widths()
        self.sites = skeleton.sites()
        rates = drop_rates(drop_path, len(self.sites))
        blocks = []
        for site in self.sites:
            width = widths[site.stage]
            c_out = width * skeleton.expansion
            blocks.append(Bottleneck(c, width, c_out, site.stride, slot(site, width, 1), rates[site.index]))
            c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        self.num_features = c
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor, weights: Sequence[Tensor] | None = None) -> Tensor:
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x) if weights is None else block(x, weights[i])
        return x

    def forward(self, x: Tensor, weights: Sequence[Tensor] | None = None) -> Tensor:
        return self.fc(self.global_pool(self.forward_features(x, weights)).flatten(1))
