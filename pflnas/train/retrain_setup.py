"""What a retrain recipe resolves to on this process: the AMP dtype, the per-process micro-batch, the LR
scaled to the global batch and the network's shape. Kept apart from the loop so each rule reads on its own
and fails with one line before anything is built."""

from __future__ import annotations

import torch

from pflnas.arch.record import Architecture
from pflnas.data.retrain import RetrainData
from pflnas.errors import ConfigError
from pflnas.models import NetworkConfig, resolve_network_config
from pflnas.train.distributed import DistInfo
from pflnas.train.recipe import RetrainConfig


def amp_dtype(cfg: RetrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``run.amp`` (default: bf16 on CUDA, none on CPU); fp16 needs CUDA."""
    mode = cfg.run.amp or ("bf16" if device.type == "cuda" else "none")
    if mode == "fp16" and device.type != "cuda":
        raise ConfigError("run.amp=fp16 needs a CUDA device; use bf16 or none on CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[mode]


def split_batch(cfg: RetrainConfig, info: DistInfo) -> int:
    """Per-process micro-batch: global batch / (processes x accumulation steps), which must divide."""
    parts = info.world_size * cfg.run.accumulation
    if cfg.data.batch_size % parts:
        raise ConfigError(
            f"data.batch_size {cfg.data.batch_size} is not divisible by processes x accumulation ({parts}); "
            "the batch size is global"
        )
    return cfg.data.batch_size // parts


def scaled_lr(cfg: RetrainConfig) -> float:
    """``optim.lr`` scaled linearly to the global batch when ``optim.lr_base_batch`` is set."""
    base = cfg.optim.lr_base_batch
    return cfg.optim.lr * cfg.data.batch_size / base if base else cfg.optim.lr


def network_config(cfg: RetrainConfig, arch: Architecture, data: RetrainData) -> NetworkConfig:
    """The network ``arch`` is retrained as: the recipe's model section on the data's classes and size."""
    m = cfg.model
    return resolve_network_config(
        arch,
        dataset=cfg.data.dataset,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        init_channels=m.init_channels,
        layers=m.layers,
        auxiliary=m.auxiliary,
        drop_path=m.drop_path,
        image_size=data.image_size,  # block networks (ViT/PiT positional embeddings) are built for it
    )
