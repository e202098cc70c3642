"""The data cache: where downloads go, and decoded ImageFolder data saved as uncompressed ``.npz``.

A decoded entry is keyed by the data set, the source's absolute path, and its size and modification time
(for a folder: those of every file under it), so editing or replacing the source invalidates it. Entries
are written to a temporary file and moved into place with ``os.replace``, so a crash or a concurrent run
never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from pflnas.data.arrays import ImageArrays
from pflnas.data.specs import DatasetSpec
from pflnas.errors import DataError
from pflnas.utils_io import file_kind

FORMAT_VERSION = 1
_KEYS = ("train_x", "train_y", "test_x", "test_y", "classes")
log = logging.getLogger(__name__)


def data_cache_dir() -> Path:
    """``$PFLNAS_CACHE/data``, or ``~/.cache/pflnas/data`` when PFLNAS_CACHE is unset (not created here).

    Every cache (decoded data, downloads, latency tables, bench scores) lives under it, so a cache path
    that is a file or a FIFO is refused here, in one line, rather than by whichever write comes first.
    """
    env = os.environ.get("PFLNAS_CACHE")
    root = Path(env or os.path.join(os.path.expanduser("~"), ".cache", "pflnas")).expanduser().absolute()
    for folder in (root, root / "data"):
        if os.path.lexists(folder) and not folder.is_dir():
            try:
                kind = file_kind(os.stat(folder).st_mode).replace("not a regular file", "not a folder")
                kind = "a file" if folder.is_file() else kind
            except OSError:
                kind = "a broken symlink or a symlink loop"
            where = f"PFLNAS_CACHE={env}" if env else "the cache folder"
            raise DataError(
                f"{where}: {folder} is {kind}, not a folder; point PFLNAS_CACHE at a folder (or unset it)"
            )
    return root / "data"


def source_key(source: Path, spec: DatasetSpec) -> str:
    """A short hash of the data set name, the source's absolute path, size and mtime (every file's, for a
    folder) and the cache format version."""
    digest = hashlib.sha256(f"v{FORMAT_VERSION}|{spec.name}|{source.absolute()}".encode())
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for file in files:
        st = file.stat()
        rel = "" if file == source else file.relative_to(source).as_posix()
        digest.update(f"|{rel}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def decoded_path(source: Path, spec: DatasetSpec) -> Path:
    """Where the decoded arrays of ``source`` are cached."""
    return data_cache_dir() / "decoded" / f"{spec.name}-{source_key(source, spec)}.npz"


def load_decoded(path: Path, spec: DatasetSpec, source: Path) -> ImageArrays | None:
    """The cached arrays at ``path``, or None when missing or unreadable (the caller decodes again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in _KEYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("ignoring unreadable data cache %s (%s)", path, exc)
        return None
    shape = (spec.channels, spec.image_size, spec.image_size)
    if any(arrays[k].dtype != np.uint8 or arrays[k].shape[1:] != shape for k in ("train_x", "test_x")):
        log.warning("ignoring data cache %s with unexpected arrays", path)
        return None
    return ImageArrays(
        name=spec.name,
        train_x=torch.from_numpy(arrays["train_x"]),
        train_y=torch.from_numpy(arrays["train_y"]),
        test_x=torch.from_numpy(arrays["test_x"]),
        test_y=torch.from_numpy(arrays["test_y"]),
        classes=tuple(str(c) for c in arrays["classes"]),
        mean=spec.mean,
        std=spec.std,
        source=str(source),
    )


def save_decoded(path: Path, data: ImageArrays) -> None:
    """Write ``data`` to ``path`` atomically; a cache that cannot be written is logged, not fatal."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as f:
            tmp = f.name
            np.savez(
                f,
                train_x=data.train_x.numpy(),
                train_y=data.train_y.numpy(),
                test_x=data.test_x.numpy(),
                test_y=data.test_y.numpy(),
                classes=np.array(data.classes, dtype=str),
            )
        os.chmod(tmp, 0o644)  # NamedTemporaryFile makes it private; a cache may be shared
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not write data cache %s (%s); the next load decodes again", path, exc)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
