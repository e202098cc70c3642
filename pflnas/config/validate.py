"""Range checks of a search config that types alone cannot express; each failure is one line naming the key.

Run before torch or the data load, so a bad value fails in a fraction of a second.
"""

from __future__ import annotations

import re

from pflnas.config.limits import threads_check
from pflnas.config.redact import redact_url
from pflnas.config.search import DataConfig, LatencyConfig, SearchConfig, SposConfig, TrialsConfig
from pflnas.errors import ConfigError
from pflnas.options import SUPERNET_LAYOUTS

# a database scheme followed by anything but "://": read as a journal path, it would split the study silently
_BROKEN_URL = re.compile(
    r"(postgres(ql)?|mysql|mariadb|sqlite|redis|rediss|oracle|mssql)(\+\w+)?(:(?!//)|//)", re.I
)


def validate_search_config(cfg: SearchConfig) -> None:
    """Range checks that types alone cannot express."""
    checks = [
        (cfg.run.epochs >= 1, f"run.epochs must be >= 1, got {cfg.run.epochs}"),
        (cfg.data.batch_size >= 1, f"data.batch_size must be >= 1, got {cfg.data.batch_size}"),
        (cfg.data.eval_batch_size >= 1, f"data.eval_batch_size must be >= 1, got {cfg.data.eval_batch_size}"),
        (
            0.0 < cfg.data.train_portion < 1.0,
            f"data.train_portion must be in (0, 1), got {cfg.data.train_portion}",
        ),
        (cfg.data.subset is None or cfg.data.subset >= 2, f"data.subset must be >= 2, got {cfg.data.subset}"),
        (cfg.weights.lr > 0, f"weights.lr must be > 0, got {cfg.weights.lr}"),
        (cfg.weights.lr_min >= 0, f"weights.lr_min must be >= 0, got {cfg.weights.lr_min}"),
        (cfg.weights.grad_clip > 0, f"weights.grad_clip must be > 0, got {cfg.weights.grad_clip}"),
        (cfg.arch.lr > 0, f"arch.lr must be > 0, got {cfg.arch.lr}"),
        (0 <= cfg.weights.momentum < 1, f"weights.momentum must be in [0, 1), got {cfg.weights.momentum}"),
        (
            cfg.weights.weight_decay >= 0,
            f"weights.weight_decay must be >= 0, got {cfg.weights.weight_decay}",
        ),
        (cfg.arch.weight_decay >= 0, f"arch.weight_decay must be >= 0, got {cfg.arch.weight_decay}"),
        (
            all(0 <= b < 1 for b in cfg.arch.betas),
            f"arch.betas must both be in [0, 1), got {list(cfg.arch.betas)}",
        ),
        (
            cfg.data.eval_limit is None or cfg.data.eval_limit >= 1,
            f"data.eval_limit must be >= 1 or null (the whole held-out split), got {cfg.data.eval_limit}",
        ),
        (0 <= cfg.run.seed < 2**63, f"run.seed must be in [0, 2**63), got {cfg.run.seed}"),
        threads_check("run.threads", cfg.run.threads),
        (
            cfg.run.nonfinite in ("stop", "skip"),
            f"run.nonfinite must be stop or skip, got {cfg.run.nonfinite!r}",
        ),
        (
            cfg.run.nonfinite_max_skips >= 0,
            f"run.nonfinite_max_skips must be >= 0, got {cfg.run.nonfinite_max_skips}",
        ),
        (
            cfg.strategy.warmup_epochs is None or 0 <= cfg.strategy.warmup_epochs < cfg.run.epochs,
            f"strategy.warmup_epochs must be in [0, run.epochs), got {cfg.strategy.warmup_epochs}",
        ),
        (
            cfg.space.layout is None or cfg.space.layout in SUPERNET_LAYOUTS,
            f"space.layout must be one of {', '.join(SUPERNET_LAYOUTS)}; got {cfg.space.layout!r}",
        ),
        (
            cfg.collapse.max_skip_per_cell >= 0,
            f"collapse.max_skip_per_cell must be >= 0, got {cfg.collapse.max_skip_per_cell}",
        ),
        *[
            (
                0.0 <= getattr(cfg.collapse, key) <= 1.0,
                f"collapse.{key} must be in [0, 1], got {getattr(cfg.collapse, key)}",
            )
            for key in ("max_skip_share", "max_skip_mass", "min_entropy")
        ],
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    _check_split_batches(cfg.data)
    _check_latency(cfg.latency, cfg.strategy.name)
    _check_trials(cfg.trials, cfg.strategy.name)
    _check_spos(cfg.spos)


def _check_split_batches(d: DataConfig) -> None:
    """With ``data.subset``, both halves of the search split must hold a whole batch: the loaders drop the
    last partial batch, so a smaller half would train nothing at all, silently."""
    if d.subset is None:
        return
    weights = int(d.train_portion * d.subset)  # the cut of pflnas.data.split.search_split
    alphas = d.subset - weights
    if min(weights, alphas) < d.batch_size:
        raise ConfigError(
            f"data.subset={d.subset} splits into {weights} images for weights and {alphas} for alphas, "
            f"fewer than data.batch_size={d.batch_size}, so no batch would be trained; lower "
            "data.batch_size or raise data.subset"
        )


def _check_spos(sp: SposConfig) -> None:
    checks = [
        (sp.population >= 1, f"spos.population must be >= 1, got {sp.population}"),
        (
            1 <= sp.sample_size <= sp.population,
            f"spos.sample_size must be in [1, spos.population={sp.population}], got {sp.sample_size}",
        ),
        (sp.cycles >= 0, f"spos.cycles must be >= 0, got {sp.cycles}"),
        (
            sp.bn_batches >= 0,
            f"spos.bn_batches must be >= 0 (0: no BatchNorm recalibration), got {sp.bn_batches}",
        ),
        (
            sp.eval_batches is None or sp.eval_batches >= 1,
            f"spos.eval_batches must be >= 1 or null (the whole held-out split), got {sp.eval_batches}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


# strategies that train no architecture weights, so a latency term in the architecture loss has no effect
NO_ARCH_WEIGHTS = ("spos", "spos_random", "evolution", "nsga2", "random")


def _check_latency(lat: LatencyConfig, strategy: str) -> None:
    if not lat.weight >= 0:
        raise ConfigError(f"latency.weight must be >= 0 (per ms of expected latency), got {lat.weight}")
    if lat.device not in (None, "cpu", "cuda"):
        raise ConfigError(f"latency.device must be cpu or cuda, got {lat.device!r}")
    if lat.batch_size < 1:
        raise ConfigError(f"latency.batch_size must be >= 1, got {lat.batch_size}")
    if lat.repeats < 1:
        raise ConfigError(f"latency.repeats must be >= 1, got {lat.repeats}")
    if lat.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--latency-device cuda: no CUDA GPU is available; use --latency-device cpu")
    if lat.weight > 0 and strategy in NO_ARCH_WEIGHTS:
        raise ConfigError(
            f"--latency-weight needs a differentiable strategy (darts, darts2, gdas, pcdarts); {strategy!r} "
            "trains no architecture weights to add a latency term to"
        )


def _check_trials(t: TrialsConfig, strategy: str) -> None:
    checks = [
        (t.n_trials >= 1, f"trials.n_trials must be >= 1, got {t.n_trials}"),
        (t.epochs >= 1, f"trials.epochs must be >= 1, got {t.epochs}"),
        (t.population >= 2, f"trials.population must be >= 2, got {t.population}"),
        (
            t.sample_size >= 1 and (strategy != "evolution" or t.sample_size <= t.population),
            f"trials.sample_size must be in [1, trials.population={t.population}], got {t.sample_size}",
        ),
        (t.heartbeat_interval >= 1, f"trials.heartbeat_interval must be >= 1 s, got {t.heartbeat_interval}"),
        (
            t.grace_period is None or t.grace_period > t.heartbeat_interval,
            f"trials.grace_period must exceed trials.heartbeat_interval ({t.heartbeat_interval} s), "
            f"got {t.grace_period}",
        ),
        (t.max_retry >= 0, f"trials.max_retry must be >= 0, got {t.max_retry}"),
        (t.study is None or t.study.strip() != "", "trials.study must be a non-empty name"),
        (t.storage is None or t.storage.strip() != "", "trials.storage must be a journal file path or a URL"),
        (
            t.storage is None or redact_url(t.storage) == t.storage,
            "the storage URL holds a password, which pflnas will not write to config.yaml; put it in an "
            "environment variable instead, e.g. --storage 'postgresql://user:${PGPASSWORD}@host/db'",
        ),
        (
            t.storage is None or not _BROKEN_URL.match(t.storage),
            f"trials.storage {t.storage!r} looks like a database URL without '://' after its scheme; write "
            "e.g. postgresql://user@host/db (a journal file path would keep the study on this machine)",
        ),
    ]
    objectives = t.objectives
    if objectives is not None:
        names = ["latency" if n == "latency_ms" else n for n in objectives]
        checks.append(
            (
                names in (["accuracy"], ["accuracy", "latency"], ["accuracy", "params"]),
                f"trials.objectives must be [accuracy], [accuracy, latency] or [accuracy, params], "
                f"got {list(objectives)}",
            )
        )
        checks.append(
            (
                strategy != "evolution" or len(names) == 1,
                "regularized evolution optimises accuracy alone (trials.objectives=[accuracy]); "
                "use --strategy nsga2 for two objectives",
            )
        )
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def resolve_layout(share_param_free: bool = True, layout: str | None = None) -> str:
    """The supernet layout: ``layout`` if given (checked), else ``per_source`` / ``per_edge``."""
    if layout is None:
        return "per_source" if share_param_free else "per_edge"
    if layout not in SUPERNET_LAYOUTS:
        raise ConfigError(f"space.layout must be one of {', '.join(SUPERNET_LAYOUTS)}; got {layout!r}")
    if not share_param_free and layout != "per_edge":
        raise ConfigError(f"run.share_param_free=false contradicts space.layout={layout}; drop one")
    return layout
