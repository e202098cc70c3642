"""Search spaces as data."""

from pflnas.spaces.config import KINDS, SpaceConfig, list_spaces, load_space

__all__ = ["KINDS", "SpaceConfig", "list_spaces", "load_space"]
