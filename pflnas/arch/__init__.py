"""Architecture records (found.json): schema, validation, derivation and DARTS genotype import."""

from pflnas.arch.record import (
    SCHEMA_VERSION,
    Architecture,
    BlockChoice,
    CellArch,
    Edge,
    load_architecture,
    save_architecture,
)

__all__ = [
    "SCHEMA_VERSION",
    "Architecture",
    "BlockChoice",
    "CellArch",
    "Edge",
    "load_architecture",
    "save_architecture",
]
