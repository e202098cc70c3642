"""Retraining recipes: typed config sections, loaded from ``experiments/recipes/*.yaml`` by name or any YAML.

Batch sizes are global (summed over processes and accumulation steps). When ``optim.lr_base_batch`` is set,
the learning rate scales linearly: ``lr * batch_size / lr_base_batch`` (Goyal et al., 2017).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pflnas.config.limits import threads_check
from pflnas.config.loader import read_yaml
from pflnas.errors import ConfigError
from pflnas.names import name_hint

AMP_MODES = ("bf16", "fp16", "none")
SCHEDULES = ("cosine", "step", "exponential")


@dataclass(frozen=True)
class ModelSection:
    init_channels: int | None = None  # None: the network's default (DARTS CIFAR 36, ImageNet 48)
    layers: int | None = None
    auxiliary: bool = False
    auxiliary_weight: float = 0.4
    drop_path: float = 0.0  # DARTS schedule: the probability grows linearly from 0 to this over training


@dataclass(frozen=True)
class DataSection:
    dataset: str = "cifar10"
    data_dir: str | None = None
    subset: int | None = None  # train on the first N of a seeded permutation of the training set
    batch_size: int = 96  # global batch
    eval_batch_size: int = 256
    workers: int = 8  # ImageFolder data only
    image_size: int | None = None
    cutout: int = 0
    randaugment: str | None = None  # timm config string, e.g. rand-m9-mstd0.5-inc1
    reprob: float = 0.0  # random erasing probability
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class OptimSection:
    name: str = "momentum"  # a timm optimizer name: momentum (SGD), sgd (Nesterov), adamw, ...
    lr: float = 0.025
    lr_base_batch: int | None = None
    momentum: float = 0.9
    weight_decay: float = 3e-4
    no_decay_bn_bias: bool = False  # exclude BN and bias parameters from weight decay
    grad_clip: float | None = 5.0


@dataclass(frozen=True)
class ScheduleSection:
    name: str = "cosine"
    epochs: int = 600
    warmup_epochs: int = 0
    warmup_lr: float = 1e-5
    min_lr: float = 0.0
    decay_epochs: float = 30.0  # step / exponential decay period
    decay_rate: float = 0.1


@dataclass(frozen=True)
class RunSection:
    seed: int = 0
    device: str = "auto"
    amp: str | None = None  # bf16 | fp16 | none; None: bf16 on GPU, none on CPU
    channels_last: bool = False
    compile: bool = False
    ema: bool = False
    ema_decay: float = 0.9998
    accumulation: int = 1
    sync_bn: bool = False
    checkpoint_every: int | None = None  # also checkpoint every N optimizer steps
    deterministic: bool | None = None
    threads: int | None = None
    progress: bool = True
    tensorboard: bool = True
    nonfinite: str = "stop"  # NaN/Inf in loss or gradients: stop | skip the batch (pflnas.train.guard)
    nonfinite_max_skips: int = 20  # nonfinite=skip: stop anyway once more steps than this were skipped


@dataclass(frozen=True)
class RetrainConfig:
    source: str = ""  # where the recipe comes from (paper, repository)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    run: RunSection = field(default_factory=RunSection)


def recipes_dir() -> Path:
    return Path(str(resources.files("pflnas.recipes")))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def recipe_layer(name_or_path: str) -> dict:
    """The YAML mapping of a recipe given by name (``cifar10_darts``) or path."""
    path = Path(name_or_path)
    if not (name_or_path.endswith((".yaml", ".yml")) or path.is_file()):
        path = recipes_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown recipe {name_or_path!r}{name_hint(name_or_path, list_recipes())}; available: "
                f"{', '.join(list_recipes())} (or a YAML path)"
            )
    return read_yaml(path)


def validate_retrain_config(cfg: RetrainConfig) -> None:
    d, o, s, r, m = cfg.data, cfg.optim, cfg.schedule, cfg.run, cfg.model
    checks = [
        (s.epochs >= 1, f"schedule.epochs must be >= 1, got {s.epochs}"),
        (d.batch_size >= 1, f"data.batch_size must be >= 1, got {d.batch_size}"),
        (d.eval_batch_size >= 1, f"data.eval_batch_size must be >= 1, got {d.eval_batch_size}"),
        (d.subset is None or d.subset >= 1, f"data.subset must be >= 1, got {d.subset}"),
        (
            d.subset is None or d.subset >= d.batch_size,
            f"data.subset={d.subset} is smaller than data.batch_size={d.batch_size}, so no batch would be "
            "trained; lower data.batch_size or raise data.subset",
        ),
        (d.workers >= 0, f"data.workers must be >= 0, got {d.workers}"),
        (d.cutout >= 0, f"data.cutout must be >= 0, got {d.cutout}"),
        (0 <= d.reprob <= 1, f"data.reprob must be in [0, 1], got {d.reprob}"),
        (d.mixup >= 0 and d.cutmix >= 0, "data.mixup and data.cutmix must be >= 0"),
        (0 <= d.label_smoothing < 1, f"data.label_smoothing must be in [0, 1), got {d.label_smoothing}"),
        (o.lr > 0, f"optim.lr must be > 0, got {o.lr}"),
        (o.momentum >= 0, f"optim.momentum must be >= 0, got {o.momentum}"),
        (o.lr_base_batch is None or o.lr_base_batch >= 1, "optim.lr_base_batch must be >= 1"),
        (o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}"),
        (o.grad_clip is None or o.grad_clip > 0, f"optim.grad_clip must be > 0, got {o.grad_clip}"),
        (s.name in SCHEDULES, f"schedule.name must be one of {', '.join(SCHEDULES)}, got {s.name!r}"),
        (
            0 <= s.warmup_epochs < s.epochs,
            f"schedule.warmup_epochs must be in [0, epochs), got {s.warmup_epochs}",
        ),
        (s.decay_epochs > 0, f"schedule.decay_epochs must be > 0, got {s.decay_epochs}"),
        (s.decay_rate > 0, f"schedule.decay_rate must be > 0, got {s.decay_rate}"),
        (s.min_lr >= 0, f"schedule.min_lr must be >= 0, got {s.min_lr}"),
        (s.warmup_lr >= 0, f"schedule.warmup_lr must be >= 0, got {s.warmup_lr}"),
        (
            r.amp is None or r.amp in AMP_MODES,
            f"run.amp must be one of {', '.join(AMP_MODES)}, got {r.amp!r}",
        ),
        (r.accumulation >= 1, f"run.accumulation must be >= 1, got {r.accumulation}"),
        (0 <= r.seed < 2**63, f"run.seed must be in [0, 2**63), got {r.seed}"),
        threads_check("run.threads", r.threads),
        (0 < r.ema_decay < 1, f"run.ema_decay must be in (0, 1), got {r.ema_decay}"),
        (r.checkpoint_every is None or r.checkpoint_every >= 1, "run.checkpoint_every must be >= 1"),
        (r.nonfinite in ("stop", "skip"), f"run.nonfinite must be stop or skip, got {r.nonfinite!r}"),
        (r.nonfinite_max_skips >= 0, f"run.nonfinite_max_skips must be >= 0, got {r.nonfinite_max_skips}"),
        (0 <= m.drop_path < 1, f"model.drop_path must be in [0, 1), got {m.drop_path}"),
        (m.auxiliary_weight >= 0, f"model.auxiliary_weight must be >= 0, got {m.auxiliary_weight}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    _check_optimizer(o.name)


def _check_optimizer(name: str) -> None:
    """``optim.name`` must be an optimizer timm's ``create_optimizer_v2`` knows; like timm, only the part
    after the last ``_`` names it (``lookahead_adamw`` is AdamW with Lookahead)."""
    from timm.optim import list_optimizers  # timm is imported only when a recipe is validated

    known = list_optimizers()
    if name.lower().split("_")[-1] not in known:
        common = ", ".join(n for n in ("momentum", "sgd", "adamw", "adam", "lamb", "rmsproptf") if n in known)
        raise ConfigError(
            f"optim.name {name!r} is not a timm optimizer; use e.g. {common} "
            "(all: timm.optim.list_optimizers())"
        )
