"""Bridge to NNI 3.0: a pflnas space as an NNI model space, and NNI's exported choice as a found.json.

NNI (Microsoft's Neural Network Intelligence) 3.0 is archived; it needs ``filelock<3.12`` and
pytorch-lightning, so it lives in the optional extra ``nni`` (``pip install 'pflnas[nni]'``, best in a
separate virtual environment). Nothing in the core package imports this module.

Library API::

    from pflnas.bridges.nni import to_nni_model_space, from_nni_choice, run_nni_search

    model_space = to_nni_model_space(space)              # nni.nas.nn.pytorch.ModelSpace
    result = run_nni_search(space, "darts", train_set, val_set, epochs=50, batch_size=64)
    save_architecture(result.architecture, "found.json")  # a valid pflnas record

    arch = from_nni_choice(space, exported_choice, probabilities=export_probs)  # no nni import needed

* :func:`to_nni_model_space` builds the space with the very candidate modules of the pflnas supernet
  (:func:`pflnas.supernet.mixed.candidate` / :func:`pflnas.ops.create_op`); labels are the pflnas labels
  (``cell3.edge2<-0``, ``block4.op``) or, for DARTS cells in NNI's ``Cell`` layout, ``cell3/op_2_0`` and
  ``cell3/input_2_0`` (see :mod:`pflnas.bridges._nni_space`).
* :func:`run_nni_search` runs NNI's DARTS, GumbelDARTS, Proxyless, RandomOneShot (one-shot) or
  RegularizedEvolution / Random (multi-trial) in NNI's in-process ``SequentialExecutionEngine`` (what
  ``NasExperiment`` uses for one-shot strategies, without its experiment manifest and log directory).
  (NNI's ENAS also needs ``tianshou``, which the extra does not install; pass ``nni.nas.strategy.ENAS()``
  as ``strategy`` if you have it.)
* :func:`from_nni_choice` turns the exported choice (``{label: op}``, ``{label: [source]}``) into an
  :class:`~pflnas.arch.record.Architecture` that validates as a found.json.

Compatibility shims NNI 3.0 needs with current torch / Lightning (all in this module):

1. ``import nni.nas.nn.pytorch`` warns that ``torch.nn.Buffer`` and other new ``torch.nn`` classes are "not
   a nn.Module" (NNI wraps every ``torch.nn`` class when imported); harmless, silenced on import.
2. NNI's Lightning evaluator keeps one ``Trainer``: in the sequential engine a multi-trial strategy's second
   trial calls ``fit`` on a finished trainer, which trains nothing and fails reading ``val_acc``. Multi-trial
   runs here build a fresh evaluator (and trainer) per trial.
"""

from __future__ import annotations

import importlib
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pflnas.arch.derive import derive_architecture
from pflnas.arch.record import Architecture, BlockChoice, CellArch, Edge
from pflnas.errors import ArchitectureError, ConfigError, PflnasError
from pflnas.ops import get_op
from pflnas.spaces.config import SpaceConfig
from pflnas.spaces.labels import edge_label

INSTALL_HINT = "install the nni extra: pip install 'pflnas[nni]'"
LAYOUTS = ("cell", "edges")
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
        # shim 1: NNI wraps every torch.nn class and warns about the ones that are not modules.
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


def default_layout(space: SpaceConfig, strategy: str | None = None) -> str:
    """``edges`` where the strategy or space needs it (Proxyless, non-DARTS cells), else ``cell``."""
    if space.kind != "darts_cell" or strategy == "proxyless":
        return "edges"
    return "cell"


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


def nni_labels(space: SpaceConfig, layout: str | None = None) -> dict[str, tuple[str, ...] | int]:
    """The choices :func:`to_nni_model_space` creates: ``{label: candidate op names}`` for op choices and
    ``{label: number of candidate sources}`` for the input choices of the ``cell`` layout (no nni needed)."""
    layout = layout or default_layout(space)
    if space.is_block:
        return {f"{g}.{space.choice_keys()[0]}": space.group_ops(g) for g, _ in space.alpha_groups()}
    groups = list(dict.fromkeys(g for g, _ in space.alpha_groups()))
    if layout == "edges":
        return {edge_label(g, n, s): space.ops for g in groups for n, s in space.edges()}
    ops = tuple(op for op in space.ops if not get_op(op).is_zero)
    out: dict[str, tuple[str, ...] | int] = {}
    for g in groups:
        for n in space.node_ids():
            for k in range(int(space.keep_edges or 1)):
                out[f"{g}/op_{n}_{k}"] = ops
                out[f"{g}/input_{n}_{k}"] = n
    return out


# --- NNI choice -> pflnas architecture ----------------------------------------------------------------
def from_nni_choice(
    space: SpaceConfig,
    choice: Mapping[str, Any],
    provenance: dict[str, Any] | None = None,
    probabilities: Mapping[str, Mapping[str, float]] | None = None,
) -> Architecture:
    """The pflnas architecture that NNI's exported choice dict selects in ``space``.

    ``choice`` is what NNI exports (``strategy.list_models()`` / ``export_top_models(formatter='dict')`` /
    a one-shot module's ``export()``): ``{label: op name}`` and, for DARTS cells in the ``cell`` layout,
    ``{label: [source]}``. ``probabilities`` (optional) is NNI's ``export_probs()``; it is stored in the
    record and, for DARTS cells in the ``edges`` layout, picks each node's two edges by the DARTS rule when
    the choice itself does not keep exactly two edges with an op per node. Any problem raises
    :class:`ArchitectureError` with one line; the result validates as a found.json.
    """
    if not isinstance(choice, Mapping) or not choice:
        raise ArchitectureError("NNI choice: expected a non-empty dict of {label: choice}")
    probs = _convert_probabilities(space, probabilities) if probabilities else {}
    prov = {"source": "nni", **(provenance or {})}
    try:
        if space.is_block:
            arch = _blocks_from_choice(space, choice, probs, prov)
        elif space.kind == "darts_cell" and any("/" in str(k) for k in choice):
            arch = _cells_from_cell_layout(space, choice, probs, prov)
        else:
            arch = _cells_from_edges(space, choice, probs, prov)
        return Architecture.from_dict(arch.to_dict(), "record")
    except ArchitectureError as exc:
        msg = str(exc)
        raise ArchitectureError(msg if msg.startswith("NNI choice") else f"NNI choice: {msg}") from None


def _check_labels(space: SpaceConfig, choice: Mapping[str, Any], expected: list[str]) -> None:
    unknown = sorted(str(k) for k in choice if k not in set(expected))
    if unknown:
        raise ArchitectureError(
            f"NNI choice: unknown label {unknown[0]!r} for space {space.name!r} "
            f"(its labels look like {expected[0]!r}; {len(unknown)} unknown in all)"
        )
    missing = [k for k in expected if k not in choice]
    if missing:
        raise ArchitectureError(
            f"NNI choice: missing label {missing[0]!r} ({len(missing)} of {len(expected)} labels missing)"
        )


def _op(space: SpaceConfig, label: str, value: Any, allowed: tuple[str, ...] | None = None) -> str:
    allowed = space.ops if allowed is None else allowed
    if not isinstance(value, str):
        raise ArchitectureError(f"NNI choice: {label!r} must name an op, got {value!r}")
    if value not in allowed:
        hint = "" if _registered(value) else " (not a registered op)"
        raise ArchitectureError(
            f"NNI choice: {label!r} chose unknown op {value!r}{hint}; candidates: {', '.join(allowed)}"
        )
    return value


def _registered(name: str) -> bool:
    try:
        get_op(name)
    except KeyError:
        return False
    return True


def _blocks_from_choice(
    space: SpaceConfig, choice: Mapping[str, Any], probs: dict[str, Any], prov: dict[str, Any]
) -> Architecture:
    key = space.choice_keys()[0]
    expected = [f"{g}.{key}" for g, _ in space.alpha_groups()]
    _check_labels(space, choice, expected)
    blocks = tuple(
        BlockChoice(g, t, _op(space, f"{g}.{key}", choice[f"{g}.{key}"], space.group_ops(g)))
        for g, t in space.alpha_groups()
    )
    return Architecture(space, (), probs, prov, blocks)


def _cells_from_cell_layout(
    space: SpaceConfig, choice: Mapping[str, Any], probs: dict[str, Any], prov: dict[str, Any]
) -> Architecture:
    labels = nni_labels(space, "cell")
    _check_labels(space, choice, list(labels))
    real = tuple(op for op in space.ops if not get_op(op).is_zero)
    cells = []
    for g, t in space.alpha_groups():
        edges = []
        for n in space.node_ids():
            for k in range(int(space.keep_edges or 1)):
                op = _op(space, f"{g}/op_{n}_{k}", choice[f"{g}/op_{n}_{k}"], real)
                src = _source(f"{g}/input_{n}_{k}", choice[f"{g}/input_{n}_{k}"], n)
                edges.append(Edge(n, src, op))
        cells.append(CellArch(g, t, tuple(edges), space.concat()))
    return Architecture(space, tuple(cells), probs, prov)


def _source(label: str, value: Any, node: int) -> int:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < node:
        raise ArchitectureError(
            f"NNI choice: {label!r} must be one source node in 0..{node - 1} (e.g. [0]), got {value!r}"
        )
    return value


def _cells_from_edges(
    space: SpaceConfig, choice: Mapping[str, Any], probs: dict[str, Any], prov: dict[str, Any]
) -> Architecture:
    labels = nni_labels(space, "edges")
    _check_labels(space, choice, list(labels))
    ops = {label: _op(space, label, choice[label]) for label in labels}
    keep = space.keep_edges
    cells = []
    for g, t in space.alpha_groups():
        edges = []
        for n in space.node_ids():
            node_edges = [Edge(n, s, ops[edge_label(g, n, s)]) for s in range(n)]
            if keep is not None:
                node_edges = [e for e in node_edges if not get_op(e.op).is_zero]
                if len(node_edges) != keep:
                    if probs:
                        return derive_architecture(space, probs, prov)
                    raise ArchitectureError(
                        f"NNI choice: node {n} of {g!r} has {len(node_edges)} edges with an op and a DARTS "
                        f"cell keeps {keep}; pass probabilities= (the strategy's export_probs()) to pick "
                        "them by the DARTS rule"
                    )
            edges += node_edges
        cells.append(CellArch(g, t, tuple(edges), space.concat()))
    return Architecture(space, tuple(cells), probs, prov)


def _convert_probabilities(
    space: SpaceConfig, probabilities: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    """NNI's ``export_probs()`` as pflnas probabilities ``{pflnas label: {op: p}}``.

    NNI's differentiable ``Cell`` reports ``cell3/2_0`` over the real ops, leaving out its own "no edge"
    weight: that weight becomes ``none`` when the space has it, else the rest is renormalised.
    """
    if not isinstance(probabilities, Mapping):
        raise ArchitectureError("NNI probabilities: expected a dict of {label: {op: probability}}")
    has_none = next((op for op in space.ops if get_op(op).is_zero), None)
    out: dict[str, dict[str, float]] = {}
    for label, dist in probabilities.items():
        if not isinstance(dist, Mapping):
            raise ArchitectureError(f"NNI probabilities[{label!r}] must be a dict of op -> probability")
        dist = {str(k): float(v) for k, v in dist.items()}
        if "/" in str(label):
            group, _, edge = str(label).partition("/")
            try:
                node, src = (int(x) for x in edge.split("_"))
            except ValueError:
                raise ArchitectureError(
                    f"NNI probabilities: unknown label {label!r} (expected e.g. 'cell0/2_0')"
                ) from None
            label = edge_label(group, node, src)
            rest = 1.0 - sum(dist.values())
            if has_none is not None:
                dist[has_none] = max(rest, 0.0)
            total = sum(dist.values())
            dist = {op: p / total for op, p in dist.items()} if total > 0 else dist
        out[str(label)] = {op: round(p, 6) for op, p in dist.items() if not math.isnan(p)}
    return out


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
    """Shim 2: an evaluator that builds a new Lightning evaluator (and trainer) for every trial."""
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
    ``strategy`` is a name from :data:`STRATEGIES` (with ``strategy_kwargs``) or an NNI strategy object.
    """
    require_nni()
    import random

    import numpy as np
    import torch
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace

    name = strategy if isinstance(strategy, str) else type(strategy).__name__.lower()
    kwargs = dict(strategy_kwargs or {})
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ConfigError(f"unknown NNI strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
        if strategy in ("darts", "gumbel_darts", "proxyless"):
            kwargs.setdefault("gradient_clip_val", 5.0)  # DARTS' weight-gradient clipping
        strategy = nni_strategy(strategy, **kwargs)
    from nni.nas.oneshot.pytorch.strategy import OneShotStrategy

    one_shot = isinstance(strategy, OneShotStrategy)
    if not one_shot and max_models is None:
        raise ConfigError("a multi-trial NNI strategy needs max_models (how many networks to train)")
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
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
        engine = SequentialExecutionEngine(max_model_count=None if one_shot else max_models)
        ev = evaluator() if one_shot else _fresh_evaluator(evaluator)
        strategy.initialize(RawFormatModelSpace(model_space, ev), engine)
        strategy.run()
        best = next(iter(strategy.list_models(limit=1)), None)
        if best is None:
            raise PflnasError(f"NNI strategy {name!r} finished without a model")
        choice = dict(best.sample)
        probs = {}
        if one_shot:
            try:
                probs = strategy.oneshot_module.export_probs()
            except Exception:  # not every one-shot module exports probabilities
                probs = {}
        metric = getattr(best, "metric", None)
    provenance = {"strategy": f"nni:{name}", "layout": layout, "epochs": epochs, "batch_size": batch_size}
    if metric is not None:
        provenance["metric"] = float(metric) if isinstance(metric, (int, float)) else str(metric)
    arch = from_nni_choice(space, choice, provenance, probs or None)
    return NNISearchResult(choice, arch, arch.probabilities, metric if isinstance(metric, float) else None)


@contextmanager
def _null() -> Any:
    yield
