"""Registered builders of the derived networks of block spaces (ResNet, ViT and PiT skeletons).

Block networks are fixed by the space's skeleton: ``init_channels`` / ``layers`` of the network config only
report the first width and the number of blocks. ``drop_path`` is timm's stochastic depth (rate rising
linearly over the blocks to the given value), not DARTS' scheduled drop-path. The record's individual
choices map one to one onto the blocks; shared choices (``normal`` / ``reduce``) apply to every block of
that type.
"""

from __future__ import annotations

from torch import nn

from pflnas.arch.record import Architecture
from pflnas.models.factory import NetworkConfig, register_network
from pflnas.models.resnet_block import ResNetBlockNet
from pflnas.models.transformer_block import PiTBlockNet, ViTBlockNet
from pflnas.ops import create_op
from pflnas.spaces.config import SpaceConfig
from pflnas.spaces.skeletons import BlockSite, PiTSkeleton, ResNetSkeleton, ViTSkeleton


def block_ops(arch: Architecture) -> list[str]:
    """The op of every block of the network, in network order."""
    space = arch.space
    return [arch.block(space.group_of_block(s.index)).op for s in space.sites()]


def block_shape(space: SpaceConfig) -> tuple[int, int]:
    """``(first width or dim, number of blocks)``: what a block network reports as init_channels/layers."""
    sk = space.skeleton_config()
    if isinstance(sk, ResNetSkeleton):
        first = sk.stage_widths()[0]
    elif isinstance(sk, ViTSkeleton):
        first = sk.dim
    else:
        first = sk.dims()[0]
    return first, len(space.sites())


def _chosen_slot(arch: Architecture):
    ops = block_ops(arch)
    context = arch.space.context

    def slot(site: BlockSite, channels: int, heads: int) -> nn.Module:
        return create_op(ops[site.index], channels, channels, site.stride, context=context, heads=heads)

    return slot


def _resnet(arch: Architecture, config: NetworkConfig) -> nn.Module:
    sk = arch.space.skeleton_config()
    assert isinstance(sk, ResNetSkeleton)
    return ResNetBlockNet(
        sk, _chosen_slot(arch), config.num_classes, config.in_channels, config.image_size, config.drop_path
    )


def _vit(arch: Architecture, config: NetworkConfig) -> nn.Module:
    sk = arch.space.skeleton_config()
    assert isinstance(sk, ViTSkeleton)
    return ViTBlockNet(
        sk, _chosen_slot(arch), config.num_classes, config.in_channels, config.image_size, config.drop_path
    )


def _pit(arch: Architecture, config: NetworkConfig) -> nn.Module:
    sk = arch.space.skeleton_config()
    assert isinstance(sk, PiTSkeleton)
    return PiTBlockNet(
        sk, _chosen_slot(arch), config.num_classes, config.in_channels, config.image_size, config.drop_path
    )


for _family in ("imagenet", "cifar"):
    register_network("resnet_block", _family, init_channels=0, layers=0, auxiliary=False)(_resnet)
    register_network("vit_block", _family, init_channels=0, layers=0, auxiliary=False)(_vit)
    register_network("pit_block", _family, init_channels=0, layers=0, auxiliary=False)(_pit)
