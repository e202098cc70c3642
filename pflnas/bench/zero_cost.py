"""A training-free search signal for NAS-Bench-201: NASWOT (Mellor et al., "Neural Architecture Search without
Training", ICML 2021).

The untrained network (pflnas' own NB201 builder) sees one fixed batch of CIFAR-10 *training* images; every
ReLU's binary activation pattern gives each image a code, and the score is the log-determinant of the kernel
``K[i, j] = number of units on which images i and j agree``. Networks that separate the images well score
high. The score is a pure function of the cell and :class:`ZeroCostConfig` (fixed batch, fixed init seed),
so it is cached on disk per cell, and its quality -- Kendall's tau against the table over a fixed sample of
cells -- is measured once per setting and cached too (:func:`signal_quality`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pflnas.arch.record import Architecture
from pflnas.bench.nb201 import NUM_CELLS, Code, NB201Table, decode_index, encode_index
from pflnas.errors import ConfigError
from pflnas.utils_io import atomic_write_json

if TYPE_CHECKING:  # torch loads when a score is computed, not for the bench's flags and checks
    from torch import Tensor, nn

QUALITY_CELLS = 1000  # the smallest sample a reported tau may rest on
QUALITY_HOW = "pflnas bench nb201 --zero-cost-quality"


@dataclass(frozen=True)
class ZeroCostConfig:
    """What a score depends on. The network is the NB201 skeleton at ``init_channels`` with ``layers`` cells
    per stage (fewer than the protocol's 5 keeps a CPU query well under a second); the batch is
    ``batch_size`` training images drawn with ``data_seed``; weights are initialised with ``init_seed``."""

    score: str = "naswot"
    batch_size: int = 32
    init_channels: int = 16
    layers: int = 1
    data_seed: int = 0
    init_seed: int = 0
    dataset: str = "cifar10"

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ConfigError(f"unknown zero-cost score {self.score!r}; choose one of {', '.join(SCORES)}")
        for name, least in (("batch_size", 2), ("init_channels", 1), ("layers", 1)):
            if getattr(self, name) < least:
                raise ConfigError(f"zero-cost {name} must be >= {least}, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def naswot_score(net: nn.Module, images: Tensor) -> float:
    """log|K| of the ReLU-code kernel of ``images`` through ``net`` (-inf when K is singular, e.g. when
    no path connects the input to the output). K is accumulated per ReLU without storing the codes:
    with c the 0/1 codes of one layer and n its units, agreements = 2 c c^T - s_i - s_j + n."""
    import torch
    from torch import nn

    n = images.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
        codes = (output.detach() > 0).flatten(1).float()
        ones = codes.sum(1, keepdim=True)
        kernel.add_((2 * codes @ codes.T - ones - ones.T + codes.shape[1]).double())

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(images)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else -math.inf


SCORES: dict[str, Callable[[nn.Module, Tensor], float]] = {"naswot": naswot_score}


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Score on one intra-op thread: the network is tiny, and on a busy 2-core machine two OpenMP threads
    spin-wait so long that a score took 8x longer (measured). ``--jobs`` runs seeds side by side instead."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fixed_batch(cfg: ZeroCostConfig, data_dir: str | None = None) -> Tensor:
    """``cfg.batch_size`` normalised training images, the same on every machine for the same data."""
    import torch

    from pflnas.data import load_dataset

    data = load_dataset(cfg.dataset, data_dir)
    if len(data.train_x) < cfg.batch_size:
        raise ConfigError(
            f"the zero-cost batch needs {cfg.batch_size} training images; the data has {len(data.train_x)}"
        )
    order = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(cfg.data_seed))
    x = data.train_x[order[: cfg.batch_size]].float() / 255.0
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


def cache_root() -> Path:
    from pflnas.data.cache import data_cache_dir

    return data_cache_dir().parent / "bench" / "nb201"


class ZeroCostScorer:
    """Scores NB201 cells with ``cfg`` on ``images``; remembers every score in memory and, after
    :meth:`save`, on disk (keyed by the settings and the batch's bytes, so other data never hits it)."""

    def __init__(self, cfg: ZeroCostConfig, images: Tensor, table: NB201Table):
        self.cfg, self.images, self.table = cfg, images, table
        digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
        digest.update(images.numpy().tobytes())
        self.key = digest.hexdigest()[:16]
        self.path = cache_root() / f"zero-cost-{cfg.score}-{self.key}.json"
        self.scores: dict[int, float] = self._load()
        self.computed = 0  # scores computed (not read from the cache) by this scorer

    def _load(self) -> dict[int, float]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return {int(k): (-math.inf if v is None else float(v)) for k, v in raw["scores"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def score_code(self, code: Code) -> float:
        index = encode_index(code)
        if index not in self.scores:
            self.scores[index] = self._compute(code)
            self.computed += 1
        return self.scores[index]

    def __call__(self, arch: Architecture) -> float:
        return self.score_code(self.table.encode(arch))

    def _compute(self, code: Code) -> float:
        import torch

        from pflnas.models import build_network

        arch = self.table.architecture(code)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.init_seed)
            net = build_network(
                arch, num_classes=10, init_channels=self.cfg.init_channels, layers=self.cfg.layers
            )
        net.train()  # batch statistics in BatchNorm, as NASWOT scores an untrained network
        with one_thread():
            return SCORES[self.cfg.score](net, self.images)

    def save(self) -> None:
        """Merge this scorer's scores into the cache file (a concurrent writer's entries are kept)."""
        merged = {**self._load(), **self.scores}
        scores = {str(k): (None if math.isinf(v) else v) for k, v in sorted(merged.items())}
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
            atomic_write_json(self.path, {"settings": self.cfg.to_dict(), "scores": scores})


# --- quality ----------------------------------------------------------------------------------------------
def quality_sample(cells: int = QUALITY_CELLS, seed: int = 0) -> list[Code]:
    """A fixed, seeded sample of ``cells`` distinct cells."""
    if not 2 <= cells <= NUM_CELLS:
        raise ConfigError(f"the quality sample must hold 2..{NUM_CELLS} cells, got {cells}")
    rng = np.random.default_rng(seed)
    return [decode_index(int(i)) for i in rng.choice(NUM_CELLS, size=cells, replace=False)]


def _quality_path(scorer: ZeroCostScorer, cells: int, seed: int) -> Path:
    return cache_root() / f"zero-cost-quality-{scorer.key}-{scorer.table.metric}-n{cells}-s{seed}.json"


def cached_quality(scorer: ZeroCostScorer, cells: int = QUALITY_CELLS, seed: int = 0) -> dict | None:
    """The stored quality of this scorer's settings, or None when it was never measured."""
    try:
        data = json.loads(_quality_path(scorer, cells, seed).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "kendall_tau" in data else None


def signal_quality(
    scorer: ZeroCostScorer, cells: int = QUALITY_CELLS, seed: int = 0, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Kendall's tau (scipy) between the score and the table's accuracy over :func:`quality_sample`;
    measured once per setting, then read from the cache."""
    stored = cached_quality(scorer, cells, seed)
    if stored is not None:
        return stored
    from scipy.stats import kendalltau

    codes = quality_sample(cells, seed)
    start, scores = time.perf_counter(), []
    for i, code in enumerate(codes):
        scores.append(scorer.score_code(code))
        if (i + 1) % 100 == 0:
            log(f"zero-cost quality: {i + 1}/{len(codes)} cells scored")
            scorer.save()
    scorer.save()
    accuracy = [scorer.table.accuracy_of(c) for c in codes]
    tau = kendalltau(_finite(scores), accuracy)
    quality = {
        "kendall_tau": float(tau.statistic),
        "p_value": float(tau.pvalue),
        "cells": cells,
        "sample_seed": seed,
        "metric": scorer.table.metric,
        "score_settings": scorer.cfg.to_dict(),
        "singular": sum(math.isinf(s) for s in scores),
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_json(_quality_path(scorer, cells, seed), quality)
    return quality


def _finite(scores: Sequence[float]) -> list[float]:
    """-inf (singular kernel) as one value below every finite score, so ranks stay well defined."""
    finite = [s for s in scores if math.isfinite(s)]
    floor = (min(finite) - 1.0) if finite else 0.0
    return [s if math.isfinite(s) else floor for s in scores]
