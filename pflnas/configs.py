"""Typed experiment configuration: frozen dataclasses, loaded from YAML with ``key=value`` overrides.

Precedence (lowest first): dataclass defaults < ``--preset`` < ``--config FILE`` < CLI flags < ``--set``.
Unknown keys and wrong types are rejected with one clear line naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, Union

from pflnas.errors import ConfigError
from pflnas.names import name_hint
from pflnas.parsing import MAX_YAML_BYTES, load_yaml, parse_yaml, parse_yaml_value  # noqa: F401 - re-exported


@dataclass(frozen=True)
class SpaceSection:
    """Which search space, and overrides of its defaults (``None`` keeps the space's value)."""

    name: str = "cell_v1"
    alpha_mode: str | None = None
    init_channels: int | None = None
    layers: int | None = None
    nodes: int | None = None
    ops: tuple[str, ...] | None = None
    skeleton: dict[str, Any] | None = None  # block spaces: merged over the space's skeleton


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
    compile: bool = False  # torch.compile the supernet forward (helps dense mixing; see README)
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
    """Measured-latency-aware differentiable search (:mod:`pflnas.latency`): the architecture loss becomes
    ``CE + weight * E[latency]``, the expected latency (ms per batch of ``batch_size``) of the derived
    network's candidate ops under the op probabilities, from a per-op table timed on ``device``. 0: off."""

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


T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-friendly dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


_EXPONENT_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            value = float(value)  # PyYAML (YAML 1.1) reads 1e-4, without a dot, as a string
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            return number
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    raise ConfigError(f"{key}: unsupported type {tp}")


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    odd = [k for k in data if not isinstance(k, str)]
    if odd:
        raise ConfigError(f"{where}: key {odd[0]!r} is not a name; valid keys here: {', '.join(names)}")
    unknown = sorted(set(data) - set(names))
    if unknown:
        dotted = ", ".join(_printable(f"{prefix}.{k}" if prefix else k) for k in unknown)
        raise ConfigError(f"unknown config key(s) {dotted}; valid keys here: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def _printable(name: str) -> str:
    """``name`` as typed, or its repr when it holds newlines or other unprintable characters."""
    return name if name.isprintable() else repr(name)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(item: str) -> dict[str, Any]:
    """``'a.b=3'`` -> ``{'a': {'b': 3}}``; the value is parsed as YAML (``true``, ``[1, 2]``, ``null``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. run.epochs=10)")
    value = parse_yaml_value(raw, f"override {key}")
    out: dict[str, Any] = {}
    cur = out
    parts = key.split(".")
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is ``{}``)."""
    p = Path(path)
    data = load_yaml(p)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return data


def list_presets() -> list[str]:
    """The named presets (``pflnas/presets/*.yaml``): help texts and listings read them from here."""
    return sorted(p.stem for p in Path(str(resources.files("pflnas.presets"))).glob("*.yaml"))


def preset_path(name: str) -> Path:
    names = list_presets()
    if name not in names:  # also keeps a name like ../x from reaching outside the presets
        raise ConfigError(
            f"unknown preset {name!r}{name_hint(name, names)}; available presets: {', '.join(names)}"
        )
    return Path(str(resources.files("pflnas.presets"))) / f"{name}.yaml"


def build_config(cls: type[T], layers: list[dict[str, Any]], overrides: list[str] = ()) -> T:  # type: ignore[assignment]
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer is None:  # an empty YAML document
            continue
        if not isinstance(layer, dict):
            raise ConfigError(f"a config must be a mapping of sections, got {type(layer).__name__}")
        merged = deep_merge(merged, layer)
    for item in overrides:
        merged = deep_merge(merged, parse_override(item))
    return from_dict(cls, merged)


# A grid is a product: a few short lists can ask for millions of runs. Far above any real study (the paper
# study has 160), low enough that planning and checking one stays instant.
MAX_RUNS = 10_000


def check_list(key: str, values: Sequence[Any]) -> None:
    """``values`` is non-empty and lists each value once (a set: linear, however long the list)."""
    if not values:
        raise ConfigError(f"{key} is empty; list at least one")
    counts = Counter(values)
    if len(counts) < len(values):
        repeated = sorted(str(v) for v, n in counts.items() if n > 1)
        shown = ", ".join(repeated[:5]) + (f" and {len(repeated) - 5} more" if len(repeated) > 5 else "")
        raise ConfigError(f"{key} repeats {shown}; list each once")


def check_grid_size(what: str, **axes: int) -> None:
    """Refuse a grid of more than :data:`MAX_RUNS` ``what`` before a single one is built."""
    total = math.prod(axes.values())
    if total > MAX_RUNS:
        sizes = " x ".join(f"{n:,} {axis.replace('_', ' ')}" for axis, n in axes.items())
        raise ConfigError(
            f"the grid has {total:,} {what} ({sizes}), over the cap of {MAX_RUNS:,} {what} at once; "
            "split it into smaller grids"
        )


# OpenMP dies creating a thread pool of 100000; more threads than a few per core only slow a run down, and
# no machine pflnas runs on has more than a few hundred cores. A fixed cap keeps config.yaml portable.
MAX_THREADS = 1024


def threads_check(key: str, threads: int | None) -> tuple[bool, str]:
    """``(ok, message)`` for a CPU thread count: null (torch's default) or 1..MAX_THREADS."""
    ok = threads is None or 1 <= threads <= MAX_THREADS
    return ok, f"{key} must be >= 1 and at most {MAX_THREADS} (or null: torch's default), got {threads}"


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


_PLACEHOLDER = re.compile(r"\$\{\w+\}|\$\w+")  # ${VAR} or $VAR, read from the environment when connecting
_URL_SECRETS = (
    re.compile(r"(?P<head>://[^:/?#@]*:)(?P<secret>[^/?#]*)@"),  # user:password@ (to the last @ of the host)
    re.compile(r"(?P<head>[?&;]password=)(?P<secret>[^&;#]*)", re.IGNORECASE),  # ?password=... (libpq)
)


# a database scheme followed by anything but "://": read as a journal path, it would split the study silently
_BROKEN_URL = re.compile(
    r"(postgres(ql)?|mysql|mariadb|sqlite|redis|rediss|oracle|mssql)(\+\w+)?(:(?!//)|//)", re.I
)


def redact_url(url: str) -> str:
    """``url`` without a literal password, in the user part (``postgresql://user:secret@host`` ->
    ``postgresql://user:***@host``) or the query (``?password=secret``); a ``${VAR}`` or ``$VAR``
    placeholder is kept, so a URL that has one is left as it is."""

    def hide(m: re.Match[str]) -> str:
        secret = m["secret"]
        kept = secret == "" or _PLACEHOLDER.fullmatch(secret)
        return m.group(0) if kept else m["head"] + "***" + m.group(0)[len(m["head"]) + len(secret) :]

    for pattern in _URL_SECRETS:
        url = pattern.sub(hide, url)
    return url


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
