"""The latency-aware search's term (``latency.weight > 0``): the table a run uses and the
:class:`~pflnas.measure.latency_objective.LatencyTerm` over it. Rank 0 reads or measures the table and every
rank uses the same one; a resumed run rereads its own copy, so its objective never changes under it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from pflnas.config.search import SearchConfig
from pflnas.errors import ConfigError
from pflnas.measure.context import SpeedConfig
from pflnas.measure.latency_objective import LatencyTerm
from pflnas.measure.latency_table import LatencyTable, cached_table, load_table
from pflnas.spaces.config import SpaceConfig
from pflnas.strategies import Strategy
from pflnas.supernet import Supernet
from pflnas.train.dist_search import SearchSync
from pflnas.train.layout import LATENCY_TABLE
from pflnas.utils_io import atomic_write_json


def latency_term(
    cfg: SearchConfig,
    strategy: Strategy,
    model: Supernet,
    sync: SearchSync,
    run_dir: Path,
    *,
    resume: bool,
    image_size: int,
    device: torch.device,
) -> LatencyTerm:
    """The latency term of the search in ``run_dir`` over the table of ``model``'s space at ``image_size``
    (the target device is ``latency.device``, else ``device``'s type)."""
    if not strategy.updates_alphas:
        raise ConfigError(
            f"--latency-weight needs a strategy that trains architecture weights; {strategy.name!r} does not"
        )
    table = sync.from_main(lambda: _run_table(cfg, model.space, run_dir, resume, image_size, device))
    return LatencyTerm(model, table, cfg.latency.weight)


def _run_table(
    cfg: SearchConfig, space: SpaceConfig, run_dir: Path, resume: bool, image_size: int, device: torch.device
) -> LatencyTable:
    """A resumed run rereads its own ``latency_table.json``; a new run takes the cached table of the
    target device (measuring it if needed) and copies it into the run directory."""
    lat, path = cfg.latency, run_dir / LATENCY_TABLE
    if resume and path.is_file():
        tqdm.write(f"latency table: the run's own {path}")
        return load_table(path)
    speed = SpeedConfig(
        device=lat.device or device.type,
        batch_size=lat.batch_size,
        repeats=lat.repeats,
        threads=torch.get_num_threads(),
    )
    source = cached_table(space, image_size, speed, lat.cache_dir)
    key = source.table.key
    how = "reused cached" if source.reused else f"measured ({len(source.table.timings)} op runs)"
    tqdm.write(
        f"latency table: {how} {source.path} -- {key['device']} ({key['device_name']}), "
        f"{key['threads']} threads, batch {key['batch_size']}, image {key['image_size']}"
    )
    atomic_write_json(path, source.table.to_dict())
    return source.table
