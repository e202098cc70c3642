"""Run search strategies against the NAS-Bench-201 table, one seed at a time.

Multi-trial strategies run exactly as a real multi-trial search would but select on a signal
(:mod:`pflnas.bench.selection`), never on the accuracy the table reports (:func:`run_multitrial_seed`);
one-shot strategies run a real supernet search whose found cell the table scores (:func:`run_oneshot_seed`).
Each seed's result is one JSON file, written atomically when the seed finishes, so an interrupted bench keeps
its finished seeds and a re-run with the same settings reuses them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pflnas.arch.record import Architecture
from pflnas.bench.nb201 import NB201Table, nb201_string
from pflnas.bench.selection import Signal, selection_label
from pflnas.config.loader import to_dict
from pflnas.config.search import SearchConfig
from pflnas.errors import ConfigError
from pflnas.utils_io import atomic_write_json

MULTI_TRIAL = ("evolution", "random")
REFUSED = {
    "nsga2": "nsga2 trades off two objectives and the NAS-Bench-201 table has one (accuracy); "
    "use evolution or random",
}
ONESHOT_SELECTION = "supernet (validation split)"  # one-shot strategies select with their own search
# config keys that do not change what a one-shot seed computes (a re-run may move the data or the device)
_NOT_SETTINGS = {("data", "data_dir"), ("run", "device"), ("run", "progress"), ("run", "threads")}


@dataclass(frozen=True)
class MultiTrialPlan:
    """A multi-trial strategy at a budget of ``queries`` cells per seed, selecting with ``signal``
    (the settings of its :class:`~pflnas.bench.selection.SignalFactory`)."""

    strategy: str
    queries: int
    signal: dict[str, Any]
    population: int = 10
    sample_size: int = 3

    @property
    def selection(self) -> str:
        return str(self.signal["selection"])

    def settings(self, table: NB201Table) -> dict[str, Any]:
        return {
            "kind": "multi-trial",
            "strategy": self.strategy,
            "queries": self.queries,
            "population": self.population,
            "sample_size": self.sample_size,
            "metric": table.metric,
            "signal": self.signal,
        }


def oneshot_settings(cfg: SearchConfig, table: NB201Table) -> dict[str, Any]:
    """What a one-shot seed's result depends on: the resolved config without the seed and local paths."""
    config = to_dict(cfg)
    config["run"].pop("seed")
    for section, key in _NOT_SETTINGS:
        config[section].pop(key, None)
    return {"kind": "one-shot", "strategy": cfg.strategy.name, "config": config, "metric": table.metric}


def score(table: NB201Table, arch: Architecture) -> dict[str, Any]:
    """True accuracy, regret to the best cell, and parameter-free share of an ``nb201`` architecture."""
    code = table.encode(arch)
    accuracy = table.accuracy_of(code)
    share = arch.param_free_share()
    return {
        "cell": nb201_string(arch),
        "code": list(code),
        "accuracy": accuracy,
        "regret": table.best_accuracy() - accuracy,
        "param_free_share": None if math.isnan(share) else share,
    }


def run_multitrial_seed(table: NB201Table, plan: MultiTrialPlan, seed: int, signal: Signal) -> dict[str, Any]:
    """One seed of a multi-trial strategy whose fitness is ``signal``; the table reports the test accuracy
    of the cell the signal ranks best (ties: the earliest query), and of the best-so-far cell after each
    query (``curve``).

    Multi-trial strategies (``evolution``, ``random``) run through :func:`pflnas.multitrial.run_trials` on
    an in-memory Optuna study; the table only *reports* the test accuracy of the cell the signal picked.
    """
    import optuna

    from pflnas.multitrial import run_trials

    result = run_trials(
        table.space,
        plan.strategy,
        signal,
        n_trials=plan.queries,
        seed=seed,
        objectives=("accuracy",),
        population=plan.population,
        sample_size=plan.sample_size,
        storage=optuna.storages.InMemoryStorage(),
        study_name=f"nb201-{plan.strategy}-{plan.selection}-seed{seed}",
    )
    trials = sorted(result.complete, key=lambda t: t.number)
    if result.best is None or result.best.architecture is None or not trials:
        raise ConfigError(f"{plan.strategy} seed {seed} completed no trial")
    chosen = result.best
    raw = chosen.metrics.get("signal")
    return {
        **score(table, chosen.architecture),
        "seed": seed,
        "selection": selection_label(plan.selection),
        "signal": raw if raw is not None and math.isfinite(raw) else None,
        "queries": len(trials),
        "found_at_query": [t.number for t in trials].index(chosen.number) + 1,
        "curve": anytime_curve(table, trials),
        "budget": {
            "queries": signal.queries,
            "epochs_per_query": signal.epochs_per_query,
            "images": signal.images,
            "signal_computations": signal.computed,
            "wall_time_s": round(result.wall_time_s, 3),
        },
        "wall_time_s": round(result.wall_time_s, 3),
    }


def anytime_curve(table: NB201Table, trials: list[Any]) -> list[float]:
    """Test accuracy of the cell the signal ranks best among the first N queries, for every N."""
    curve: list[float] = []
    best_value, best_acc = -math.inf, math.nan
    for t in trials:
        if t.values[0] > best_value:  # strict: ties keep the earlier cell, as the returned one does
            best_value, best_acc = t.values[0], table.accuracy(t.architecture)
        curve.append(best_acc)
    return curve


def oneshot_images(config: dict[str, Any], train_images: int = 50_000) -> int:
    """Images through the supernet's weight step of a resolved search config (as a dict): epochs x the
    full batches of the weight part of the split (CIFAR-10 has ``train_images`` training images)."""
    data = config["data"]
    weights = int(data["train_portion"] * (data["subset"] or train_images))
    return config["run"]["epochs"] * (weights // data["batch_size"]) * data["batch_size"]


def run_oneshot_seed(table: NB201Table, cfg: SearchConfig, run_dir: Path) -> dict[str, Any]:
    """One seed of a one-shot strategy (``darts``, ``gdas``, ...): a real supernet search on ``nb201`` in
    ``run_dir`` (resumed if it has a checkpoint), its found.json scored by the table."""
    from pflnas.train.layout import CHECKPOINT, FOUND
    from pflnas.train.search import SearchRun

    t0 = time.perf_counter()
    arch = SearchRun(cfg, run_dir).run(resume=(run_dir / CHECKPOINT).is_file())
    wall = round(time.perf_counter() - t0, 3)
    return {
        **score(table, arch),
        "seed": cfg.run.seed,
        "selection": ONESHOT_SELECTION,
        "epochs": cfg.run.epochs,
        "found": str(run_dir / FOUND),
        "search_time_s": arch.provenance.get("wall_time_s"),
        "budget": {"epochs": cfg.run.epochs, "images": oneshot_images(to_dict(cfg)), "wall_time_s": wall},
        "wall_time_s": wall,
    }


# --- per-seed files -----------------------------------------------------------------------------------
def seed_file(out: Path, strategy: str, seed: int, selection: str | None = None) -> Path:
    """``out/<strategy>/seed<k>.json`` (one-shot) or ``out/<strategy>/<selection>/seed<k>.json``."""
    folder = out / strategy if selection is None else out / strategy / selection
    return folder / f"seed{seed}.json"


def _plain(data: Any) -> Any:
    return json.loads(json.dumps(data))


def finished_seed(path: Path, settings: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """The result stored at ``path`` if it was made with ``settings``; None if there is none (or it differs
    and ``overwrite``); ConfigError if it differs otherwise."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        data = None  # a torn or foreign file: redo the seed
    if not isinstance(data, dict) or "result" not in data:
        return None
    if data.get("settings") == _plain(settings):
        return dict(data["result"])
    if overwrite:
        return None
    raise ConfigError(
        f"{path} holds a result made with other settings; use --overwrite to replace it or another --out"
    )


def save_seed(path: Path, settings: dict[str, Any], result: dict[str, Any]) -> None:
    atomic_write_json(path, {"settings": _plain(settings), "result": _plain(result)})
