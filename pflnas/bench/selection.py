"""What a multi-trial seed on NAS-Bench-201 selects on (``--selection``): never the accuracy it reports.

The table holds CIFAR-10 *test* accuracy. A search that keeps the queried cell with the best test accuracy
and then reports that accuracy has selected on its own score. So a seed's fitness comes from a signal
(:class:`Signal`): ``zero-cost`` (:class:`ZeroCostSignal`), ``proxy`` (:class:`ProxySignal`), or ``oracle``
(:class:`OracleSignal`), the last only when asked for and labelled as such everywhere.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Protocol

from pflnas.arch.record import Architecture
from pflnas.bench.nb201 import NB201Table, cell_architecture
from pflnas.bench.zero_cost import ZeroCostConfig, ZeroCostScorer, cached_quality, fixed_batch
from pflnas.errors import ConfigError

SELECTIONS = ("zero-cost", "proxy", "oracle")
DEFAULT_SELECTION = "zero-cost"
ORACLE_LABEL = "oracle (selected on test)"


def selection_label(name: str) -> str:
    """How a selection is named in every table, JSON entry and figure."""
    return ORACLE_LABEL if name == "oracle" else name


def to_unit(value: float) -> float:
    """A strictly increasing map of the real line (and -inf) into [0, 1]: the fitness Optuna ranks."""
    return 0.5 + math.atan(value) / math.pi


@dataclass(frozen=True)
class ProxyConfig:
    """The proxy's budget per query: ``epochs`` on the weight half of a ``subset`` of the CIFAR-10 training
    set, accuracy on the other half, at width ``init_channels`` with ``layers`` cells per stage."""

    epochs: int = 1
    subset: int = 5000
    init_channels: int = 16
    layers: int = 5
    batch_size: int = 64

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            least = 2 if f.name == "subset" else 1  # the split needs an image on each side
            if getattr(self, f.name) < least:
                raise ConfigError(f"proxy {f.name} must be >= {least}, got {getattr(self, f.name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SelectionSpec:
    """A selection and everything its signal needs (picklable: worker processes rebuild the signal)."""

    name: str = DEFAULT_SELECTION
    zero_cost: ZeroCostConfig = ZeroCostConfig()
    proxy: ProxyConfig = ProxyConfig()
    data_dir: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.name not in SELECTIONS:
            raise ConfigError(f"unknown --selection {self.name!r}; choose one of {', '.join(SELECTIONS)}")


class Signal(Protocol):
    """A seed's evaluator: ``{"accuracy": fitness in [0, 1], "signal": raw value}``, and its spending.

    ``accuracy`` is the fitness mapped into [0, 1] by :func:`to_unit` (strictly increasing, so the ranking
    is the signal's), ``signal`` the raw value. Each signal counts the budget it spends.
    """

    queries: int
    images: int
    epochs_per_query: int
    computed: int

    def __call__(self, arch: Architecture) -> dict[str, float]: ...


class OracleSignal:
    """The table's test accuracy: selecting on what is reported (labelled "oracle (selected on test)")."""

    epochs_per_query = 0

    def __init__(self, table: NB201Table):
        self.table = table
        self.queries = self.images = self.computed = 0

    def __call__(self, arch: Architecture) -> dict[str, float]:
        percent = self.table.accuracy(arch)
        self.queries += 1
        return {"accuracy": percent / 100.0, "signal": percent}


class ZeroCostSignal:
    """``zero-cost``: NASWOT of the untrained cell (:mod:`pflnas.bench.zero_cost`), cheap on a CPU;
    ``images`` counts the batch of every query, ``computed`` the scores not found in the cache."""

    epochs_per_query = 0

    def __init__(self, scorer: ZeroCostScorer):
        self.scorer = scorer
        self.queries = self.images = 0
        self._computed_before = scorer.computed

    @property
    def computed(self) -> int:
        return self.scorer.computed - self._computed_before

    def __call__(self, arch: Architecture) -> dict[str, float]:
        score = self.scorer(arch)
        self.queries += 1
        self.images += self.scorer.cfg.batch_size
        return {"accuracy": to_unit(score), "signal": score}  # -inf: a singular kernel


class ProxySignal:
    """``proxy``: held-out accuracy after a short training of the cell (see :class:`ProxyConfig`).

    The cell trains on the weight half of the CIFAR-10 search split and is scored on the held-out half
    (validation images from the training set, never the test set), as NAS-Bench-201's own REA and random
    search select on validation accuracy.
    """

    def __init__(self, table: NB201Table, spec: SelectionSpec, seed: int):
        from pflnas.device import resolve_device
        from pflnas.multitrial.evaluator import TrainingEvaluator

        p = spec.proxy
        self.table = table
        self.space = table.space.replace(init_channels=p.init_channels, layers=p.layers)
        self.evaluator = TrainingEvaluator(proxy_config(spec, seed), resolve_device(spec.device))
        train, held_out = self.evaluator.loaders.train, self.evaluator.loaders.evaluate
        self.epochs_per_query = p.epochs
        self.images_per_query = p.epochs * len(train) * train.batch_size + held_out.num_samples
        self.queries = self.images = self.computed = 0

    def __call__(self, arch: Architecture) -> dict[str, float]:
        out = self.evaluator(cell_architecture(self.space, self.table.encode(arch)))
        self.queries += 1
        self.computed += 1
        self.images += self.images_per_query
        return {"accuracy": out["accuracy"], "signal": 100.0 * out["accuracy"]}


def proxy_config(spec: SelectionSpec, seed: int) -> Any:
    """The search config the proxy trains with (the multi-trial trainer's; the split follows ``seed``)."""
    from pflnas.config.search import DataConfig, RunConfig, SearchConfig, SpaceSection, TrialsConfig
    from pflnas.config.validate import validate_search_config

    p = spec.proxy
    cfg = SearchConfig(
        space=SpaceSection(name="nb201", init_channels=p.init_channels, layers=p.layers),
        data=DataConfig(data_dir=spec.data_dir, subset=p.subset, batch_size=p.batch_size),
        trials=TrialsConfig(epochs=p.epochs),
        run=RunConfig(seed=seed, device=spec.device, progress=False),
    )
    validate_search_config(cfg)
    return cfg


class SignalFactory:
    """Builds each seed's signal. Construction loads what the selection needs, so missing data or a bad
    device fails before any seed runs; the zero-cost scorer (and its score cache) is shared by all seeds."""

    def __init__(self, spec: SelectionSpec, table: NB201Table):
        self.spec, self.table = spec, table
        self.scorer: ZeroCostScorer | None = None
        if spec.name == "zero-cost":
            self.scorer = ZeroCostScorer(spec.zero_cost, fixed_batch(spec.zero_cost, spec.data_dir), table)
        elif spec.name == "proxy":
            from pflnas.data import load_dataset
            from pflnas.device import resolve_device

            resolve_device(spec.device)
            data = load_dataset("cifar10", spec.data_dir)
            if spec.proxy.subset > len(data.train_x):
                raise ConfigError(
                    f"--proxy-subset {spec.proxy.subset} exceeds the {len(data.train_x)} training images"
                )

    def settings(self) -> dict[str, Any]:
        """What a seed's result depends on (stored with it, so another selection never reuses it)."""
        name = self.spec.name
        if name == "zero-cost":
            assert self.scorer is not None
            return {"selection": name, "score": self.spec.zero_cost.to_dict(), "data_key": self.scorer.key}
        if name == "proxy":
            return {"selection": name, "proxy": self.spec.proxy.to_dict(), "dataset": "cifar10"}
        return {"selection": name, "metric": self.table.metric}

    def for_seed(self, seed: int) -> Signal:
        if self.scorer is not None:
            return ZeroCostSignal(self.scorer)
        if self.spec.name == "proxy":
            return ProxySignal(self.table, self.spec, seed)
        return OracleSignal(self.table)

    def quality(self) -> dict[str, Any] | None:
        """The zero-cost signal's measured quality (None if never measured or not zero-cost)."""
        return cached_quality(self.scorer) if self.scorer is not None else None

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.save()
