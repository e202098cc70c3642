"""Tiny versions of every built-in space, for fast CPU tests (16x16 inputs)."""

from pflnas.spaces import load_space
from pflnas.spaces.config import SpaceConfig

TINY_SKELETONS = {
    "resnet_block": {"depths": [1, 2], "widths": [4, 8], "stem_width": 8},
    "vit_block": {"dim": 12, "depth": 3, "heads": 3, "small_patch_size": 4},
    "pit_block": {
        "base_dim": 4,
        "heads": [1, 2],
        "depths": [1, 2],
        "small_patch_size": 4,
        "small_patch_stride": 2,
    },
}


def tiny(name: str) -> SpaceConfig:
    s = load_space(name)
    if s.is_block:
        return s.replace(skeleton=TINY_SKELETONS[s.kind])
    return s.replace(init_channels=4, layers=s.kind_spec.min_layers)  # DARTS cells: 3, NB201: 1
