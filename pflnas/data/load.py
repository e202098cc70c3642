"""``load_dataset``: find a data set on disk (or download it), read it whole into memory, cache decodes.

An explicit ``data_dir`` is the only place looked at: a wrong one is an error, never a silent fallback to
other data. Without it, ``$PFLNAS_DATA`` is tried, then the cache folder (``$PFLNAS_CACHE/data`` or
``~/.cache/pflnas/data``), where torchvision may download. Each may be an ImageFolder archive, a folder
holding ``train/`` and ``test/``, a torchvision root, a folder holding one of the known archives, or a
folder holding a ``<dataset name>/`` subfolder with any of these.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pflnas.data.arrays import ImageArrays
from pflnas.data.cache import data_cache_dir, decoded_path, load_decoded, save_decoded, source_key
from pflnas.data.imagefolder import is_tree_folder, read_imagefolder_archive, read_imagefolder_folder
from pflnas.data.specs import DatasetSpec, get_dataset_spec
from pflnas.data.torchvision_formats import (
    download_torchvision,
    extract_torchvision_archive,
    has_torchvision_layout,
    read_torchvision,
)
from pflnas.errors import DataError
from pflnas.utils_io import check_regular_file

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
SourceKind = Literal["imagefolder-archive", "imagefolder-folder", "torchvision", "torchvision-archive"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """A place a data set was found, and which reader it needs."""

    kind: SourceKind
    path: Path


def load_dataset(
    name: str, data_dir: str | os.PathLike[str] | None = None, *, download: bool = True
) -> ImageArrays:
    """Load data set ``name`` (a key of ``DATASETS``) whole into memory as uint8 tensors.

    The first location holding the data wins; an explicit ``data_dir`` is the only one tried (empty, missing,
    special or without the data: :class:`DataError`). ``$PFLNAS_DATA`` must exist and be a file or folder.
    If no location holds the data and ``download`` is true, torchvision downloads it into the cache folder.
    ImageFolder images are decoded once and cached (see :mod:`pflnas.data.cache`). Every problem with the
    data raises :class:`DataError` with one line saying what is wrong and what to do.
    """
    spec = get_dataset_spec(name)
    looked: list[str] = []
    for label, location in _locations(data_dir):
        if label != "cache":
            check_location(label, location, spec)
        source = find_source(location, spec)
        if source is not None:
            return read_source(source, spec)
        if label == "--data-dir":
            raise DataError(f"--data-dir {location} holds no {spec.name} data; {where_to_put(spec)}")
        if label != "cache":
            looked.append(f" in {label} {location} or the cache")
    cache = data_cache_dir()
    why = "downloads are off"
    if download:
        try:
            download_torchvision(cache, spec)
            return read_source(Source("torchvision", cache), spec)
        except DataError as exc:
            why = str(exc)
    raise DataError(f"{spec.name} data not found{''.join(looked)} ({why}); {where_to_put(spec)}")


def where_to_put(spec: DatasetSpec) -> str:
    """Where a user can put ``spec``'s files, in one short clause."""
    return (
        f"put {spec.archive_names[0]} (train/<class>/*, test/<class>/*) in {data_cache_dir()}, or point "
        "--data-dir or PFLNAS_DATA at it or at a folder holding train/ and test/"
    )


def check_location(label: str, location: Path, spec: DatasetSpec) -> None:
    """``location`` (given as ``label``) must be a folder or a regular file; a FIFO, a device, a symlink
    loop or a missing path is one line saying which, before anything is opened or downloaded."""
    if not location.is_dir():  # a folder, or a link to one, is fine; anything else must be a regular file
        check_regular_file(location, f"{label}", DataError)


def find_source(location: Path, spec: DatasetSpec, *, descend: bool = True) -> Source | None:
    """What ``location`` holds for ``spec``, or None; a file that is not a tar archive raises DataError."""
    location = location.absolute()
    if location.is_file():
        if location.name == spec.torchvision_archive:
            return Source("torchvision-archive", location)
        if location.name.lower().endswith(ARCHIVE_SUFFIXES):
            return Source("imagefolder-archive", location)
        raise DataError(f"{location} is not a .tar.gz/.tgz/.tar archive; point at the archive or its folder")
    if not location.is_dir():
        return None
    if is_tree_folder(location):
        return Source("imagefolder-folder", location)
    if has_torchvision_layout(location, spec):
        return Source("torchvision", location)
    for archive in spec.archive_names:
        if (location / archive).is_file():
            return Source("imagefolder-archive", location / archive)
    if spec.torchvision_archive and (location / spec.torchvision_archive).is_file():
        return Source("torchvision-archive", location / spec.torchvision_archive)
    if descend and (location / spec.name).is_dir():
        return find_source(location / spec.name, spec, descend=False)
    return None


def read_source(source: Source, spec: DatasetSpec) -> ImageArrays:
    """Read ``source`` with the reader its kind needs, through the decode cache for ImageFolder data."""
    if source.kind == "torchvision":
        return read_torchvision(source.path, spec)
    if source.kind == "torchvision-archive":
        dest = data_cache_dir() / "extracted" / f"{spec.name}-{source_key(source.path, spec)}"
        data = read_torchvision(extract_torchvision_archive(source.path, dest, spec), spec)
        return dataclasses.replace(data, source=str(source.path))
    cached_at = decoded_path(source.path, spec)
    cached = load_decoded(cached_at, spec, source.path)
    if cached is not None:
        return cached
    log.info("decoding %s once (cached at %s)", source.path, cached_at)
    read = read_imagefolder_archive if source.kind == "imagefolder-archive" else read_imagefolder_folder
    data = read(source.path, spec)
    save_decoded(cached_at, data)
    return data


def _locations(data_dir: str | os.PathLike[str] | None) -> list[tuple[str, Path]]:
    """``--data-dir`` alone when given (even as ""), else ``$PFLNAS_DATA`` (when set) and the cache."""
    if data_dir is not None:
        text = os.fspath(data_dir)
        if not text.strip():  # Path("") would be the current folder
            raise DataError("--data-dir is empty; give the folder or archive of the data, or leave it out")
        return [("--data-dir", Path(text).expanduser())]
    found: list[tuple[str, Path]] = []
    env = os.environ.get("PFLNAS_DATA")
    if env:
        found.append(("PFLNAS_DATA", Path(env).expanduser()))
    found.append(("cache", data_cache_dir()))
    return found
