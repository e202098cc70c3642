"""Atomic checkpoints, loaded with ``weights_only=True`` (no pickle of arbitrary objects)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from pflnas.errors import PflnasError
from pflnas.utils_io import atomic_write


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Serialize to memory first, then write-then-rename: a crash never leaves a truncated checkpoint."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write(path, lambda fh: fh.write(buffer.getbuffer()))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise PflnasError(f"checkpoint {p} does not exist; nothing to resume")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, corrupt or not a checkpoint at all
        raise PflnasError(
            f"checkpoint {p} cannot be read ({type(exc).__name__}); it is damaged or not a pflnas checkpoint"
        ) from None
