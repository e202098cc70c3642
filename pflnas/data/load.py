"""``load_dataset``: find a data set on disk (or download it), read it whole into memory, cache decodes.

Locations are tried in order: the explicit ``data_dir``, then ``$PFLNAS_DATA``, then the cache folder
(``$PFLNAS_CACHE/data`` or ``~/.cache/pflnas/data``). Each may be an ImageFolder archive, a folder holding
``train/`` and ``test/``, a torchvision root, a folder holding one of the known archives, or a folder
holding a ``<dataset name>/`` subfolder with any of these.
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

    The first location holding the data wins. An explicit ``data_dir`` or ``$PFLNAS_DATA`` that does not
    exist raises :class:`DataError` (rather than silently falling through). If no location holds the data
    and ``download`` is true, torchvision downloads it into the cache folder. ImageFolder images are decoded
    once and cached (see :mod:`pflnas.data.cache`); later loads read the cache. Every problem with the data
    raises :class:`DataError` with one line saying what is wrong and what to do.
    """
    spec = get_dataset_spec(name)
    looked: list[str] = []
    for label, location in _locations(data_dir):
        if label != "cache" and not location.exists():
            raise DataError(f"{label} {location} does not exist; point it at the {spec.name} data")
        source = find_source(location, spec)
        if source is not None:
            return read_source(source, spec)
        looked.append(str(location))
    cache = data_cache_dir()
    if not download:
        why = "download=False"
    else:
        try:
            download_torchvision(cache, spec)
            return read_source(Source("torchvision", cache), spec)
        except DataError as exc:
            why = str(exc)
    raise DataError(
        f"{spec.name} data not found in {', '.join(looked)} ({why}); pass --data-dir or set PFLNAS_DATA to "
        f"an ImageFolder .tar.gz (train/<class>/*, test/<class>/*), a folder holding train/ and test/, "
        f"or a folder holding torchvision's {spec.torchvision_folder}/"
    )


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
    found: list[tuple[str, Path]] = []
    if data_dir is not None:
        found.append(("--data-dir", Path(data_dir).expanduser()))
    env = os.environ.get("PFLNAS_DATA")
    if env:
        found.append(("PFLNAS_DATA", Path(env).expanduser()))
    found.append(("cache", data_cache_dir()))
    return found
