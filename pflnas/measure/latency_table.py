"""The per-op latency table of a space on one device: every candidate op timed at every position.

A latency-aware search needs a cost per (choice, op) that is cheap to look up and stable, so each distinct
op run is timed once, alone, as the derived network builds it (:func:`time_op`), and a choice's cost sums
its positions (:mod:`pflnas.measure.positions`; :attr:`LatencyTable.choices`). Measuring takes a while, so
tables are cached per device, torch version, space, image size and batch (:func:`cached_table`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from pflnas.data.cache import data_cache_dir
from pflnas.errors import PflnasError
from pflnas.measure.context import SpeedConfig, device_name
from pflnas.measure.positions import choice_positions
from pflnas.measure.prepare import op_input_shape
from pflnas.measure.speed import time_forward
from pflnas.ops import create_op, get_op
from pflnas.parsing import load_json
from pflnas.spaces.config import SpaceConfig
from pflnas.spaces.skeletons import OpSite
from pflnas.utils_io import atomic_write_json

FORMAT = "pflnas-latency-table-1"
log = logging.getLogger(__name__)


class OpRun(NamedTuple):
    """One distinct op run: what decides its time."""

    op: str
    context: str
    channels: int
    stride: int
    height: int
    width: int
    heads: int


@dataclass(frozen=True)
class OpTiming:
    run: OpRun
    median_ms: float
    iqr_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.run._asdict(), "median_ms": self.median_ms, "iqr_ms": self.iqr_ms}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OpTiming:
        return cls(OpRun(**{k: d[k] for k in OpRun._fields}), float(d["median_ms"]), float(d["iqr_ms"]))


@dataclass(frozen=True)
class LatencyTable:
    """``choices[label][op]``: ms per batch the op costs at that choice (0 for ``none``): the sum over the
    choice's positions of ``position.share * time(op at position.site)``."""

    key: dict[str, Any]
    choices: dict[str, dict[str, float]]
    timings: tuple[OpTiming, ...]
    warmup: int
    repeats: int
    seconds: float  # how long measuring took

    @property
    def device(self) -> str:
        return str(self.key["device"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "unit": "ms per batch",
            "key": self.key,
            "warmup": self.warmup,
            "repeats": self.repeats,
            "seconds": self.seconds,
            "choices": self.choices,
            "timings": [t.to_dict() for t in self.timings],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyTable:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file (format {d.get('format')!r})")
        return cls(
            key=dict(d["key"]),
            choices={k: {op: float(v) for op, v in ops.items()} for k, ops in d["choices"].items()},
            timings=tuple(OpTiming.from_dict(t) for t in d["timings"]),
            warmup=int(d["warmup"]),
            repeats=int(d["repeats"]),
            seconds=float(d["seconds"]),
        )


def space_hash(space: SpaceConfig) -> str:
    """A short hash of the space's resolved dict (any change of ops, widths, depths changes it)."""
    text = json.dumps(space.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def table_key(space: SpaceConfig, image_size: int, cfg: SpeedConfig) -> dict[str, Any]:
    """What a table's numbers depend on (the cache key)."""
    return {
        "device": cfg.device,
        "device_name": device_name(cfg.device),
        "threads": cfg.threads,
        "torch_version": torch.__version__,
        "space": space.name,
        "space_hash": space_hash(space),
        "image_size": image_size,
        "batch_size": cfg.batch_size,
    }


def cache_path(key: Mapping[str, Any], cache_dir: str | Path | None = None) -> Path:
    """The cache file of ``key``: ``<cache_dir or the pflnas cache>/latency/<space>-<device>-<hash>.json``."""
    root = Path(cache_dir).expanduser() if cache_dir else data_cache_dir().parent
    digest = hashlib.sha256(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()[:20]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(key["space"]))
    return root / "latency" / f"{name}-{key['device']}-{digest}.json"


def time_op(run: OpRun, cfg: SpeedConfig) -> tuple[float, float]:
    """Median and IQR (ms per batch) of ``run``'s forward pass at batch ``cfg.batch_size``.

    A distinct run is the same op, channels in and out, stride, input grid and heads, built as the derived
    network builds it (``create_op(op, C, C, stride, context=..., heads=...)``, affine BN) and timed with
    :func:`pflnas.measure.speed.time_forward`'s protocol (eval mode, inference mode, warm-up, then
    ``repeats`` timed passes; CUDA events + synchronize on a GPU) in float32 and the contiguous memory
    format whatever the search's AMP setting; the median is the op's time. ``none`` is never timed.
    """
    torch.manual_seed(0)  # callers keep their own RNG stream (see measure_table)
    model = create_op(run.op, run.channels, run.channels, run.stride, context=run.context, heads=run.heads)
    site = OpSite(0, run.stride, run.channels, run.height, run.width, run.heads)
    stats = time_forward(model, op_input_shape(run.context, site, 1), cfg, batch_size=cfg.batch_size)
    return stats.median, stats.iqr


def _runs(space: SpaceConfig, site: OpSite) -> list[OpRun]:
    return [
        OpRun(op, space.context, site.channels, site.stride, site.height, site.width, site.heads)
        for op in space.ops_at(site.stride)
        if not get_op(op).is_zero
    ]


def measure_table(space: SpaceConfig, image_size: int, cfg: SpeedConfig) -> LatencyTable:
    """Time every distinct op run of ``space`` at ``image_size`` and sum them per choice and op.

    The global RNG state (CPU and CUDA) is restored afterwards, so measuring does not change a search."""
    positions = choice_positions(space, image_size)
    start = time.perf_counter()
    times: dict[OpRun, tuple[float, float]] = {}
    devices = [torch.cuda.current_device()] if cfg.device == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for site in space.op_sites(image_size):
            for run in _runs(space, site):
                if run not in times:
                    times[run] = time_op(run, cfg)
    choices: dict[str, dict[str, float]] = {}
    for label, places in positions.items():
        group = label.split(".", 1)[0]
        row = {}
        for op in space.group_ops(group):
            if get_op(op).is_zero:
                row[op] = 0.0
                continue
            row[op] = sum(p.share * times[OpRun(op, space.context, *_shape(p.site))][0] for p in places)
        choices[label] = row
    return LatencyTable(
        key=table_key(space, image_size, cfg),
        choices=choices,
        timings=tuple(OpTiming(run, *t) for run, t in times.items()),
        warmup=cfg.warmup,
        repeats=cfg.repeats,
        seconds=round(time.perf_counter() - start, 3),
    )


def _shape(site: OpSite) -> tuple[int, int, int, int, int]:
    return site.channels, site.stride, site.height, site.width, site.heads


class TableSource(NamedTuple):
    table: LatencyTable
    path: Path  # the cache file
    reused: bool  # True: read from the cache; False: measured now


MAX_TABLE_BYTES = 16 * 1024 * 1024  # a table is kilobytes (one number per op, site and stride)


def load_table(path: str | Path) -> LatencyTable:
    """A table file (a run's ``latency_table.json`` or a cache entry); raises PflnasError when unreadable."""
    try:
        return LatencyTable.from_dict(load_json(path, "latency table", MAX_TABLE_BYTES))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PflnasError(f"cannot read latency table {path}: {exc}") from None


def cached_table(
    space: SpaceConfig, image_size: int, cfg: SpeedConfig, cache_dir: str | Path | None = None
) -> TableSource:
    """The cached table for this device, space, image size and batch, else a freshly measured one (then
    cached; a cache that cannot be written is logged, not fatal).

    Tables are JSON under ``<cache>/latency/`` (``latency.cache_dir``, else ``$PFLNAS_CACHE``, else
    ``~/.cache/pflnas``), one file per key (:func:`table_key`): the device (kind, CPU model or GPU name,
    threads), the torch version, the space (a hash of its resolved dict), the image size and the batch.
    Files are written atomically; an unreadable or mismatching file is measured again."""
    key = table_key(space, image_size, cfg)
    path = cache_path(key, cache_dir)
    if path.is_file():
        try:
            table = load_table(path)
            if table.key == key and set(table.choices) == set(choice_positions(space, image_size)):
                return TableSource(table, path, True)
            log.warning("latency cache %s does not match its key; measuring again", path)
        except PflnasError as exc:
            log.warning("%s; measuring again", exc)
    table = measure_table(space, image_size, cfg)
    try:
        atomic_write_json(path, table.to_dict())
    except OSError as exc:
        log.warning("could not write the latency cache %s (%s)", path, exc)
    return TableSource(table, path, False)
