"""pflnas: neural architecture search for parameter-free vs trainable spatial operations."""

from pflnas.arch import SCHEMA_VERSION, Architecture, CellArch, Edge, load_architecture, save_architecture
from pflnas.arch.derive import derive_architecture
from pflnas.errors import ArchitectureError, ConfigError, DataError, PflnasError
from pflnas.ops import OpSpec, create_op, get_op, list_ops, register_op
from pflnas.spaces import SpaceConfig, list_spaces, load_space

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "Architecture",
    "ArchitectureError",
    "CellArch",
    "ConfigError",
    "DataError",
    "Edge",
    "OpSpec",
    "PflnasError",
    "SpaceConfig",
    "__version__",
    "create_op",
    "derive_architecture",
    "get_op",
    "list_ops",
    "list_spaces",
    "load_architecture",
    "load_space",
    "register_op",
    "save_architecture",
]
