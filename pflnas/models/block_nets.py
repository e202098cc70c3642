"""Registered builders of the derived networks of block spaces: one per block kind, whose object names
the network body (ResNet, ViT or PiT) the supernet also uses.

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
from pflnas.ops import create_op
from pflnas.spaces.kinds import KINDS, BlockKind
from pflnas.spaces.skeletons import BlockSite


def block_ops(arch: Architecture) -> list[str]:
    """The op of every block of the network, in network order."""
    space = arch.space
    return [arch.block(space.group_of_block(s.index)).op for s in space.sites()]


def _chosen_slot(arch: Architecture):
    ops = block_ops(arch)
    context = arch.space.context

    def slot(site: BlockSite, channels: int, heads: int) -> nn.Module:
        return create_op(ops[site.index], channels, channels, site.stride, context=context, heads=heads)

    return slot


def _block_network(arch: Architecture, config: NetworkConfig) -> nn.Module:
    """The space kind's network body with every slot holding the record's op."""
    kind = arch.space.kind_spec
    assert isinstance(kind, BlockKind)
    return kind.body_class()(
        arch.space.skeleton_config(),
        _chosen_slot(arch),
        config.num_classes,
        config.in_channels,
        config.image_size,
        config.drop_path,
    )


for _kind in KINDS.values():
    if isinstance(_kind, BlockKind):
        for _family in ("imagenet", "cifar"):
            register_network(_kind.name, _family, init_channels=0, layers=0, auxiliary=False)(_block_network)
