"""Derived (stand-alone) networks built from architecture records: :func:`build_network`."""

from pflnas.models import block_nets as _block_nets  # noqa: F401  (registers the block-space networks)
from pflnas.models import darts as _darts  # noqa: F401  (registers the DARTS-cell networks)
from pflnas.models import nb201 as _nb201  # noqa: F401  (registers the NB201 network)
from pflnas.models.cell_map import darts_network_cells, nb201_network_cells, stage_map
from pflnas.models.darts import NetworkCIFAR, NetworkImageNet
from pflnas.models.factory import (
    DATASET_PRESETS,
    AuxOutput,
    DatasetPreset,
    NetworkConfig,
    build_from_config,
    build_network,
    register_network,
    resolve_network_config,
)
from pflnas.models.nb201 import TinyNetwork
from pflnas.models.resnet_block import ResNetBlockNet
from pflnas.models.transformer_block import PiTBlockNet, ViTBlockNet

__all__ = [
    "DATASET_PRESETS",
    "AuxOutput",
    "DatasetPreset",
    "NetworkCIFAR",
    "NetworkConfig",
    "NetworkImageNet",
    "PiTBlockNet",
    "ResNetBlockNet",
    "TinyNetwork",
    "ViTBlockNet",
    "build_from_config",
    "build_network",
    "darts_network_cells",
    "nb201_network_cells",
    "register_network",
    "resolve_network_config",
    "stage_map",
]
