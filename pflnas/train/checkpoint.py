"""Atomic checkpoints, loaded with ``weights_only=True`` (no pickle of arbitrary objects)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, Any

import torch

from pflnas.errors import PflnasError
from pflnas.utils_io import atomic_write, open_regular


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Serialize to memory first, then write-then-rename: a crash never leaves a truncated checkpoint."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write(path, lambda fh: fh.write(buffer.getbuffer()))


def remove_stale_temp_files(run_dir: str | Path) -> list[Path]:
    """Delete the temp files that atomic writes killed midway left in ``run_dir`` (``.NAME.XXXX.tmp``;
    the file they were replacing is intact). Call it only when no other process writes there."""
    removed = []
    for tmp in Path(run_dir).glob(".*.tmp"):
        if tmp.is_file() and not tmp.is_symlink():  # never a link's target
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``; a missing, truncated or foreign file is one clear line, and only a
    regular file is opened (a FIFO would block, a device never end: :func:`~pflnas.utils_io.open_regular`)."""
    p = Path(path)
    with open_regular(p, "checkpoint") as fh:
        return load_checkpoint_from(fh, p, map_location)


def load_checkpoint_from(
    source: str | Path | IO[bytes], origin: str | Path, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint from a file or a byte stream (e.g. bytes rank 0 sent) with ``weights_only=True``;
    ``origin`` names it in the one-line error for a damaged or foreign one."""
    try:
        state = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, corrupt, not a torch file, or holds non-tensor objects
        raise PflnasError(
            f"checkpoint {origin} cannot be read ({type(exc).__name__}); it is damaged (cut short?) or not a "
            "torch file: restore it from a copy, or delete it and start the run again"
        ) from None
    if not isinstance(state, dict):
        raise PflnasError(f"checkpoint {origin} is not a pflnas checkpoint (not a dict)")
    return state
