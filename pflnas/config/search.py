"""The search config: one frozen dataclass per component, composed into :class:`SearchConfig`.

Defaults here are the DARTS protocol; presets, config files, flags and ``--set`` override them
(:mod:`pflnas.config.build`). Range checks that types cannot express are in :mod:`pflnas.config.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SpaceSection:
    """Which search space, and overrides of its defaults (``None`` keeps the space's value); ``layout`` is how
    the supernet holds it, not part of the space."""

    name: str = "cell_v1"
    alpha_mode: str | None = None
    init_channels: int | None = None
    layers: int | None = None
    nodes: int | None = None
    ops: tuple[str, ...] | None = None
    skeleton: dict[str, Any] | None = None  # block spaces: merged over the space's skeleton
    layout: str | None = None  # per_edge | per_source | batched (None: from run.share_param_free)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "cifar10"
    data_dir: str | None = None
    subset: int | None = None  # use only this many training images (None: all)
    train_portion: float = 0.5  # share of the (subset of the) training set for weights; rest for alphas
    batch_size: int = 64
    eval_batch_size: int = 256
    eval_limit: int | None = None  # evaluate on at most this many held-out images per epoch (None: all)


@dataclass(frozen=True)
class WeightOptimConfig:
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0


@dataclass(frozen=True)
class ArchOptimConfig:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 1e-3


@dataclass(frozen=True)
class StrategyConfig:
    name: str = "darts"  # darts | darts2 | gdas | pcdarts | spos | spos_random | evolution | nsga2 | random
    warmup_epochs: int | None = None  # epochs before the first architecture step (None: the strategy's)


@dataclass(frozen=True)
class RunConfig:
    epochs: int = 50
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = False  # bf16 autocast
    channels_last: bool = False
    # torch.compile the whole supernet forward (not per cell; helps dense mixing; see README); with
    # run.cuda_graph the compiled forward is captured inside the step graph (pflnas.train.graph_step)
    compile: bool = False
    cuda_graph: bool = False  # replay each search step as one CUDA graph (fixed-path strategies, one GPU)
    deterministic: bool | None = None  # None: deterministic on CPU (exact resume), cuDNN autotune on GPU
    share_param_free: bool = True  # compute parameter-free ops once per source node
    progress: bool = True
    threads: int | None = None  # torch CPU threads (None: torch's default)
    verify_sync: bool = False  # torchrun: check after every step (not only every epoch) that ranks agree
    nonfinite: str = "stop"  # NaN/Inf in a loss, gradients or alphas: stop | skip (pflnas.train.guard)
    nonfinite_max_skips: int = 20  # nonfinite=skip: stop anyway once more batches than this were skipped


@dataclass(frozen=True)
class CollapseConfig:
    """When the live diagnostics flag a search as collapsed (see :mod:`pflnas.arch.collapse`)."""

    max_skip_per_cell: int = 2  # a derived normal cell keeping more parameter-free skips (P-DARTS: 2)
    max_skip_share: float = 0.5  # block spaces: share of blocks choosing a parameter-free skip
    max_skip_mass: float = 0.5  # mean probability of the parameter-free skips over all choices
    min_entropy: float = 0.05  # mean normalised entropy (0: one-hot alphas, 1: uniform)


@dataclass(frozen=True)
class SposConfig:
    """One-shot search after supernet training (``spos``, ``spos_random``): candidates are scored with
    inherited weights after recalibrating BatchNorm statistics."""

    population: int = 20  # regularized evolution: population size (>= 1)
    sample_size: int = 5  # tournament size (1..population)
    cycles: int = 60  # candidates evaluated after the initial population (random search: population + cycles)
    bn_batches: int = 10  # training batches used to recalibrate BatchNorm statistics per candidate (0: none)
    eval_batches: int | None = None  # held-out batches scored per candidate (None: the whole eval split)


@dataclass(frozen=True)
class TrialsConfig:
    """Multi-trial search on Optuna (``evolution``, ``nsga2``, ``random``): each trial trains one sampled
    architecture for a short budget."""

    n_trials: int = 20  # complete trials the study needs, over all workers sharing it
    epochs: int = 1  # training epochs per trial
    # [accuracy] or [accuracy, latency|params] (latency: measured at batch 1 on the run's device);
    # None: the strategy's default ([accuracy, latency] for nsga2, [accuracy] otherwise)
    objectives: tuple[str, ...] | None = None
    storage: str | None = None  # journal file path or Optuna storage URL (None: the run dir's trials.journal)
    study: str | None = None  # study name (None: <space>-<strategy>-seed<seed>, the same on every worker)
    population: int = 10  # regularized evolution / NSGA-II population
    sample_size: int = 3  # regularized evolution tournament size
    heartbeat_interval: int = 30  # seconds between worker heartbeats
    grace_period: int | None = None  # seconds without a heartbeat before a trial counts as dead (None: 2x)
    max_retry: int = 3  # retries of a trial whose worker died


@dataclass(frozen=True)
class LatencyConfig:
    """Measured-latency-aware differentiable search (:mod:`pflnas.measure.latency_objective`): the
    architecture loss becomes ``CE + weight * E[latency]``, the expected latency (ms per batch of
    ``batch_size``) of the derived network's candidate ops under the op probabilities, from a per-op table
    timed on ``device``. 0: off."""

    weight: float = 0.0  # per millisecond
    device: str | None = None  # cpu | cuda: where the op latency table is measured (None: the search device)
    batch_size: int = 1  # batch the ops are timed at
    repeats: int = 20  # timed passes per op (after 10 warm-up passes)
    cache_dir: str | None = None  # latency table cache (None: $PFLNAS_CACHE, else ~/.cache/pflnas)


@dataclass(frozen=True)
class SearchConfig:
    space: SpaceSection = field(default_factory=SpaceSection)
    data: DataConfig = field(default_factory=DataConfig)
    weights: WeightOptimConfig = field(default_factory=WeightOptimConfig)
    arch: ArchOptimConfig = field(default_factory=ArchOptimConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    run: RunConfig = field(default_factory=RunConfig)
    collapse: CollapseConfig = field(default_factory=CollapseConfig)
    spos: SposConfig = field(default_factory=SposConfig)
    trials: TrialsConfig = field(default_factory=TrialsConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
