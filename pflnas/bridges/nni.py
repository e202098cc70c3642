"""Bridge to NNI 3.0: a pflnas space as an NNI model space, and NNI's exported choice as a found.json.

NNI (Microsoft's Neural Network Intelligence) 3.0 is archived and needs ``filelock<3.12`` and
pytorch-lightning, so it lives in the optional extra ``nni`` (``pip install 'pflnas[nni]'``, best in a
separate virtual environment) and nothing in the core package imports this module. The model space is built
from the very candidate modules of the pflnas supernet, so NNI searches what pflnas searches and its choice
converts to a valid record. Usage: :func:`run_nni_search`. The shims NNI 3.0 needs with current torch /
Lightning live here, marked "shim 1" and "shim 2" where they apply.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pflnas.arch.record import Architecture
from pflnas.bridges._nni_choice import LAYOUTS, default_layout, from_nni_choice, nni_labels
from pflnas.errors import ConfigError, PflnasError
from pflnas.spaces.config import SpaceConfig

__all__ = [
    "LAYOUTS",
    "MULTI_TRIAL",
    "ONE_SHOT",
    "STRATEGIES",
    "NNISearchResult",
    "classification_evaluator",
    "darts_sgd",
    "default_layout",
    "from_nni_choice",
    "nni_labels",
    "nni_strategy",
    "nni_unavailable_reason",
    "quiet_nni",
    "require_nni",
    "run_nni_search",
    "to_nni_model_space",
]

INSTALL_HINT = "install the nni extra: pip install 'pflnas[nni]'"
ONE_SHOT = ("darts", "gumbel_darts", "proxyless", "random_one_shot")
MULTI_TRIAL = ("regularized_evolution", "random")
STRATEGIES = ONE_SHOT + MULTI_TRIAL

_status: str | None = None
_checked = False


def nni_unavailable_reason() -> str | None:
    """``None`` when NNI 3.0's NAS API imports here, else one line saying why not."""
    global _status, _checked
    if not _checked:
        _checked = True
        try:
            _import_nni()
        except Exception as exc:  # ImportError, or an incompatibility surfacing at import time
            _status = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
    return _status


def require_nni() -> None:
    """Raise :class:`PflnasError` (``install the nni extra ...``) unless NNI can be used."""
    reason = nni_unavailable_reason()
    if reason is not None:
        raise PflnasError(f"{INSTALL_HINT} ({reason})")


def _import_nni() -> Any:
    with warnings.catch_warnings():
        # shim 1: NNI wraps every torch.nn class when imported and warns that torch.nn.Buffer and other new
        # torch.nn classes are "not a nn.Module"; harmless, so silenced here.
        warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
        nni = importlib.import_module("nni")
        version = getattr(nni, "__version__", "?")
        if not str(version).startswith("3."):
            raise ImportError(f"pflnas' NNI bridge needs NNI 3.x, found {version}")
        importlib.import_module("nni.nas.nn.pytorch")
        importlib.import_module("nni.nas.strategy")
        importlib.import_module("nni.nas.evaluator.pytorch")
    return nni


def _space_module() -> Any:
    require_nni()
    from pflnas.bridges import _nni_space

    return _nni_space


def to_nni_model_space(
    space: SpaceConfig,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    layout: str | None = None,
) -> Any:
    """The NNI 3.0 ``ModelSpace`` of ``space`` (cell and block spaces; see :mod:`pflnas.bridges._nni_space`).

    ``layout`` matters for DARTS cells only: ``cell`` (NNI's ``Cell``, the default) or ``edges`` (one
    ``LayerChoice`` per edge, as the pflnas supernet). ``image_size`` picks a block space's stem.

    Candidates are the pflnas supernet's own (:func:`pflnas.supernet.mixed.candidate` /
    :func:`pflnas.ops.create_op`); labels are the pflnas labels (``cell3.edge2<-0``, ``block4.op``) or, for
    DARTS cells in NNI's ``Cell`` layout, ``cell3/op_2_0`` and ``cell3/input_2_0``.
    """
    layout = layout or default_layout(space)
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown NNI layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if layout == "cell" and space.kind != "darts_cell":
        raise ConfigError(f"layout 'cell' is for DARTS cells; space {space.name!r} is a {space.kind} space")
    mod = _space_module()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
        return mod.build(space, num_classes, in_channels, image_size, layout)


# --- running NNI strategies in-process -----------------------------------------------------------------
@dataclass
class NNISearchResult:
    """What :func:`run_nni_search` found: NNI's choice, its probabilities (one-shot), the pflnas record."""

    choice: dict[str, Any]
    architecture: Architecture
    probabilities: dict[str, dict[str, float]] = field(default_factory=dict)
    metric: float | None = None


def nni_strategy(name: str, **kwargs: Any) -> Any:
    """An NNI 3.0 strategy by pflnas name: ``darts``, ``gumbel_darts``, ``proxyless``,
    ``random_one_shot``, ``regularized_evolution``, ``random``; ``kwargs`` go to its constructor."""
    require_nni()
    from nni.nas import strategy as S

    classes: dict[str, Callable[..., Any]] = {
        "darts": S.DARTS,
        "gumbel_darts": S.GumbelDARTS,
        "proxyless": S.Proxyless,
        "random_one_shot": S.RandomOneShot,
        "regularized_evolution": S.RegularizedEvolution,
        "random": S.Random,
    }
    if name not in classes:
        raise ConfigError(f"unknown NNI strategy {name!r}; use one of {', '.join(classes)}")
    return classes[name](**kwargs)


@contextmanager
def quiet_nni(level: int = logging.WARNING) -> Any:
    """Lower NNI's and Lightning's console chatter (per-node export logs, accelerator banners)."""
    loggers = [logging.getLogger(n) for n in ("nni", "pytorch_lightning", "lightning", "lightning.pytorch")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="pytorch_lightning")
            warnings.filterwarnings("ignore", module="lightning_fabric")
            warnings.filterwarnings("ignore", module="nni")
            yield
    finally:
        for lg, lv in zip(loggers, old):
            lg.setLevel(lv)


def darts_sgd() -> type:
    """SGD with DARTS' momentum 0.9, as an optimizer class NNI's evaluator can instantiate."""
    import torch

    class DartsSGD(torch.optim.SGD):
        def __init__(self, params: Any, lr: float = 0.025, weight_decay: float = 3e-4) -> None:
            super().__init__(params, lr=lr, momentum=0.9, weight_decay=weight_decay)

    return DartsSGD


def classification_evaluator(
    train: Any,
    val: Any,
    *,
    batch_size: int = 64,
    epochs: int = 1,
    learning_rate: float = 0.025,
    weight_decay: float = 3e-4,
    num_classes: int = 10,
    limit_train_batches: int | float | None = None,
    accelerator: str = "auto",
    num_workers: int = 0,
    callbacks: list[Any] | None = None,
) -> Any:
    """NNI's ``Classification`` evaluator with the DARTS weight recipe (SGD, momentum 0.9, wd 3e-4)."""
    require_nni()
    from nni.nas.evaluator.pytorch import Classification, DataLoader

    trainer_kwargs: dict[str, Any] = {
        "max_epochs": epochs,
        "accelerator": accelerator,
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "callbacks": callbacks or [],
    }
    if limit_train_batches is not None:
        trainer_kwargs["limit_train_batches"] = limit_train_batches
    return Classification(
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        optimizer=darts_sgd(),
        train_dataloaders=DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=num_workers),
        val_dataloaders=DataLoader(val, batch_size=batch_size, shuffle=False, num_workers=num_workers),
        num_classes=num_classes,
        **trainer_kwargs,
    )


def _fresh_evaluator(factory: Callable[[], Any]) -> Any:
    """Shim 2: an evaluator that builds a new Lightning evaluator (and trainer) for every trial.

    NNI's Lightning evaluator keeps one ``Trainer``: in the sequential engine a multi-trial strategy's
    second trial calls ``fit`` on a finished trainer, which trains nothing and fails reading ``val_acc``.
    """
    from nni.nas.evaluator import Evaluator

    class FreshEvaluator(Evaluator):
        def evaluate(self, model: Any) -> Any:
            return factory().evaluate(model)

    return FreshEvaluator()


def run_nni_search(
    space: SpaceConfig,
    strategy: str | Any,
    train: Any,
    val: Any,
    *,
    epochs: int = 1,
    batch_size: int = 64,
    learning_rate: float = 0.025,
    weight_decay: float = 3e-4,
    limit_train_batches: int | float | None = None,
    max_models: int | None = None,
    layout: str | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    accelerator: str = "auto",
    seed: int | None = None,
    strategy_kwargs: dict[str, Any] | None = None,
    quiet: bool = True,
) -> NNISearchResult:
    """Run an NNI strategy on ``space`` in NNI's in-process engine and convert what it found.

    ``train`` / ``val`` are map-style datasets of ``(image, label)``; one-shot strategies train weights on
    ``train`` and architecture weights on ``val`` (NNI's DARTS interleaves them), multi-trial ones train each
    sampled network for ``epochs`` on ``train`` and rank by accuracy on ``val``, over ``max_models`` trials.
    ``strategy`` is a name from :data:`STRATEGIES` (with ``strategy_kwargs``) or an NNI strategy object:
    NNI's DARTS, GumbelDARTS, Proxyless, RandomOneShot (one-shot) or RegularizedEvolution / Random
    (multi-trial). NNI's ENAS also needs ``tianshou``, which the extra does not install; pass
    ``nni.nas.strategy.ENAS()`` as ``strategy`` if you have it. The engine is NNI's in-process
    ``SequentialExecutionEngine`` (what ``NasExperiment`` uses for one-shot strategies, without its
    experiment manifest and log directory). Library use::

        from pflnas.bridges.nni import to_nni_model_space, from_nni_choice, run_nni_search

        model_space = to_nni_model_space(space)              # nni.nas.nn.pytorch.ModelSpace
        result = run_nni_search(space, "darts", train_set, val_set, epochs=50, batch_size=64)
        save_architecture(result.architecture, "found.json")  # a valid pflnas record

        arch = from_nni_choice(space, exported_choice, probabilities=export_probs)  # no nni import needed
    """
    require_nni()
    from nni.nas.oneshot.pytorch.strategy import OneShotStrategy

    name, strategy = _strategy_object(strategy, strategy_kwargs)
    one_shot = isinstance(strategy, OneShotStrategy)
    if not one_shot and max_models is None:
        raise ConfigError("a multi-trial NNI strategy needs max_models (how many networks to train)")
    if seed is not None:
        _seed_everything(seed)
    layout = layout or default_layout(space, name)
    if name == "proxyless" and layout == "cell":
        raise ConfigError("NNI 3.0's Proxyless has no Cell; use layout='edges' for DARTS cells")

    def evaluator() -> Any:
        return classification_evaluator(
            train,
            val,
            batch_size=batch_size,
            epochs=epochs,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            num_classes=num_classes,
            limit_train_batches=limit_train_batches,
            accelerator=accelerator,
        )

    with quiet_nni() if quiet else _null():
        model_space = to_nni_model_space(space, num_classes, in_channels, image_size, layout)
        ev = evaluator() if one_shot else _fresh_evaluator(evaluator)
        choice, probs, metric = _run_strategy(strategy, name, model_space, ev, one_shot, max_models)
    provenance = {"strategy": f"nni:{name}", "layout": layout, "epochs": epochs, "batch_size": batch_size}
    if metric is not None:
        provenance["metric"] = float(metric) if isinstance(metric, (int, float)) else str(metric)
    arch = from_nni_choice(space, choice, provenance, probs or None)
    return NNISearchResult(choice, arch, arch.probabilities, metric if isinstance(metric, float) else None)


def _strategy_object(strategy: str | Any, strategy_kwargs: dict[str, Any] | None) -> tuple[str, Any]:
    """``(name, NNI strategy)`` of a pflnas name (with DARTS' gradient clipping by default) or an object."""
    if not isinstance(strategy, str):
        return type(strategy).__name__.lower(), strategy
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown NNI strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    kwargs = dict(strategy_kwargs or {})
    if strategy in ("darts", "gumbel_darts", "proxyless"):
        kwargs.setdefault("gradient_clip_val", 5.0)  # DARTS' weight-gradient clipping
    return strategy, nni_strategy(strategy, **kwargs)


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _run_strategy(
    strategy: Any, name: str, model_space: Any, evaluator: Any, one_shot: bool, max_models: int | None
) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Run ``strategy`` in NNI's sequential engine; the best model's choice, probabilities (one-shot
    modules that export them, else ``{}``) and metric."""
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace

    engine = SequentialExecutionEngine(max_model_count=None if one_shot else max_models)
    strategy.initialize(RawFormatModelSpace(model_space, evaluator), engine)
    strategy.run()
    best = next(iter(strategy.list_models(limit=1)), None)
    if best is None:
        raise PflnasError(f"NNI strategy {name!r} finished without a model")
    probs = {}
    if one_shot:
        try:
            probs = strategy.oneshot_module.export_probs()
        except Exception:  # not every one-shot module exports probabilities
            probs = {}
    return dict(best.sample), probs, getattr(best, "metric", None)


@contextmanager
def _null() -> Any:
    yield
