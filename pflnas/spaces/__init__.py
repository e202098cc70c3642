"""Search spaces as data: a :class:`SpaceConfig` per space, whose ``kind`` names one object in ``KINDS``."""

from pflnas.spaces.config import SpaceConfig, list_spaces, load_space, resolve_space
from pflnas.spaces.kinds import KINDS, SpaceKind

__all__ = ["KINDS", "SpaceConfig", "SpaceKind", "list_spaces", "load_space", "resolve_space"]
