"""Run search strategies against the NAS-Bench-201 table and summarise them over seeds.

Multi-trial strategies (``evolution``, ``random``) query the table directly: each query is one trial whose
"training" is a table look-up, and the trials run through :func:`pflnas.multitrial.run_trials` on an
in-memory Optuna storage, exactly as a real multi-trial search would. One-shot strategies (``darts``,
``gdas``, ...) run a real supernet search on the ``nb201`` space; the table then scores the cell they found.

Each seed's result is one JSON file, written atomically when the seed finishes, so an interrupted bench keeps
its finished seeds and a re-run with the same settings reuses them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pflnas.arch.record import Architecture
from pflnas.bench.nb201 import NB201Stats, NB201Table, load_nb201_table, nb201_string
from pflnas.configs import SearchConfig, to_dict
from pflnas.errors import ConfigError, PflnasError
from pflnas.utils_io import atomic_write_json

MULTI_TRIAL = ("evolution", "random")
REFUSED = {
    "nsga2": "nsga2 trades off two objectives and the NAS-Bench-201 table has one (accuracy); "
    "use evolution or random",
}
# config keys that do not change what a one-shot seed computes (a re-run may move the data or the device)
_NOT_SETTINGS = {("data", "data_dir"), ("run", "device"), ("run", "progress"), ("run", "threads")}


@dataclass(frozen=True)
class MultiTrialPlan:
    """A multi-trial strategy at a budget of ``queries`` table look-ups per seed."""

    strategy: str
    queries: int
    population: int = 10
    sample_size: int = 3

    def settings(self, table: NB201Table) -> dict[str, Any]:
        return {
            "kind": "multi-trial",
            "strategy": self.strategy,
            "queries": self.queries,
            "population": self.population,
            "sample_size": self.sample_size,
            "metric": table.metric,
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


def run_multitrial_seed(table: NB201Table, plan: MultiTrialPlan, seed: int) -> dict[str, Any]:
    """One seed of a multi-trial strategy with the table as its evaluator (an in-memory Optuna study)."""
    import optuna

    from pflnas.multitrial import run_trials

    result = run_trials(
        table.space,
        plan.strategy,
        table.evaluate,
        n_trials=plan.queries,
        seed=seed,
        objectives=("accuracy",),
        population=plan.population,
        sample_size=plan.sample_size,
        storage=optuna.storages.InMemoryStorage(),
        study_name=f"nb201-{plan.strategy}-seed{seed}",
    )
    trials = sorted(result.complete, key=lambda t: t.number)
    if result.best is None or result.best.architecture is None or not trials:
        raise ConfigError(f"{plan.strategy} seed {seed} completed no trial")
    curve = np.maximum.accumulate([t.metrics["accuracy_percent"] for t in trials])
    return {
        **score(table, result.best.architecture),
        "seed": seed,
        "queries": len(trials),
        "found_at_query": [t.number for t in trials].index(result.best.number) + 1,
        "curve": [float(a) for a in curve],
        "wall_time_s": round(result.wall_time_s, 3),
    }


def run_oneshot_seed(table: NB201Table, cfg: SearchConfig, run_dir: Path) -> dict[str, Any]:
    """One seed of a one-shot strategy: a search on ``nb201`` in ``run_dir`` (resumed if it has a
    checkpoint), its found.json scored by the table."""
    from pflnas.train.search import CHECKPOINT, FOUND, SearchRun

    t0 = time.perf_counter()
    arch = SearchRun(cfg, run_dir).run(resume=(run_dir / CHECKPOINT).is_file())
    return {
        **score(table, arch),
        "seed": cfg.run.seed,
        "epochs": cfg.run.epochs,
        "found": str(run_dir / FOUND),
        "search_time_s": arch.provenance.get("wall_time_s"),
        "wall_time_s": round(time.perf_counter() - t0, 3),
    }


@dataclass(frozen=True)
class OneShotJob:
    """One pending one-shot seed: its search config, run directory, result file and settings."""

    cfg: SearchConfig
    run_dir: Path
    result_path: Path
    settings: dict[str, Any]


def _run_job(job: OneShotJob, threads: int) -> dict[str, Any]:
    """Worker process: one one-shot seed, its search output in ``run_dir/search.log``; saves its result."""
    cfg = job.cfg
    if cfg.run.threads is None:  # share the cores between the jobs
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, threads=threads))
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, progress=False))
    table = load_nb201_table()  # cached per process: a worker loads it once for all its seeds
    job.run_dir.mkdir(parents=True, exist_ok=True)
    with (
        open(job.run_dir / "search.log", "a", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        result = run_oneshot_seed(table, cfg, job.run_dir)
    save_seed(job.result_path, job.settings, result)
    return result


def run_oneshot_jobs(
    jobs: Sequence[OneShotJob], workers: int, log: Callable[[str], None], *, warm_data: bool = True
) -> None:
    """Run one-shot seeds in ``workers`` spawned processes at once (several searches share a GPU well when
    each is launch-bound; on CPU each gets ``cpu_count // workers`` threads unless ``run.threads`` is set).
    Each finished seed is saved by its worker, so an interrupted bench keeps it. The first failure stops
    the rest and is raised as one line."""
    if not jobs:
        return
    if warm_data:  # decode the data set into the cache once, not once per worker
        from pflnas.data import load_dataset

        load_dataset(jobs[0].cfg.data.dataset, jobs[0].cfg.data.data_dir)
    threads = max(1, (os.cpu_count() or 1) // workers)
    log(f"running {len(jobs)} one-shot seeds in {workers} processes ({threads} threads each)")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        futures: dict[Future, OneShotJob] = {pool.submit(_run_job, job, threads): job for job in jobs}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                job = futures[future]
                name = f"{job.cfg.strategy.name} seed {job.cfg.run.seed}"
                exc = future.exception()
                if exc is not None:
                    for other in pending:
                        other.cancel()
                    why = str(exc) if isinstance(exc, PflnasError) else f"{type(exc).__name__}: {exc}"
                    raise ConfigError(f"{name} failed ({why}); its log: {job.run_dir / 'search.log'}")
                log(f"{name}: done in {future.result()['wall_time_s']:.1f} s")


# --- per-seed files -----------------------------------------------------------------------------------
def seed_file(out: Path, strategy: str, seed: int) -> Path:
    return out / strategy / f"seed{seed}.json"


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


# --- summaries ----------------------------------------------------------------------------------------
def mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean and sample standard deviation (None for fewer than two values) of the non-None values."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else None,
        "n": len(vals),
    }


def summarize(
    table: NB201Table, settings: dict[str, Any], results: list[dict[str, Any]], stats: NB201Stats
) -> dict[str, Any]:
    """Mean +- std over seeds, the budget, and (multi-trial) the anytime regret curve."""
    out: dict[str, Any] = {
        "strategy": settings["strategy"],
        "kind": settings["kind"],
        "seeds": [r["seed"] for r in results],
        "accuracy": mean_std([r["accuracy"] for r in results]),
        "regret": mean_std([r["regret"] for r in results]),
        "param_free_share": mean_std([r["param_free_share"] for r in results]),
        "top_param_free_share": stats.top_param_free_share,
        "wall_time_s": mean_std([r.get("wall_time_s") for r in results]),
        "settings": _plain(settings),
    }
    if settings["kind"] == "multi-trial":
        out["budget"] = {"queries": settings["queries"]}
        curves = [r["curve"] for r in results]
        n = min(len(c) for c in curves)
        best = np.array([c[:n] for c in curves])
        regret = table.best_accuracy() - best
        out["anytime"] = {
            "queries": list(range(1, n + 1)),
            "best_mean": best.mean(0).tolist(),
            "regret_mean": regret.mean(0).tolist(),
            "regret_std": (regret.std(0, ddof=1) if len(curves) > 1 else np.zeros(n)).tolist(),
        }
    else:
        out["budget"] = {"epochs": settings["config"]["run"]["epochs"]}
    out["runs"] = results
    return out


def _pm(stat: dict[str, float | None], fmt: str) -> str:
    if stat["mean"] is None:
        return "n/a"
    std = "" if stat["std"] is None else f" ± {format(stat['std'], fmt)}"
    return format(stat["mean"], fmt) + std


def markdown_table(summaries: list[dict[str, Any]], table: NB201Table, stats: NB201Stats) -> str:
    """The per-strategy table, with the table's own facts above it."""
    best_arch, best = table.best()
    lines = [
        f"NAS-Bench-201, CIFAR-10 test accuracy ({table.metric}, analog-nasbench): {stats.cells} cells, "
        f"best {best:.2f} `{nb201_string(best_arch)}`; best {stats.top_fraction:.0%} = {stats.top_cells} "
        f"cells >= {stats.top_threshold:.2f}, their parameter-free share {stats.top_param_free_share:.3f}",
        "",
        "| strategy | kind | seeds | budget / seed | test accuracy (%) | regret (pp) | parameter-free share "
        "| share in best 1% | wall time / seed (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summaries:
        budget = (
            f"{s['budget']['queries']} queries"
            if "queries" in s["budget"]
            else f"{s['budget']['epochs']} epochs"
        )
        lines.append(
            f"| {s['strategy']} | {s['kind']} | {len(s['seeds'])} | {budget} | {_pm(s['accuracy'], '.2f')} "
            f"| {_pm(s['regret'], '.2f')} | {_pm(s['param_free_share'], '.3f')} "
            f"| {s['top_param_free_share']:.3f} | {_pm(s['wall_time_s'], '.1f')} |"
        )
    anytime = [s for s in summaries if "anytime" in s]
    if anytime:
        n = min(len(s["anytime"]["queries"]) for s in anytime)
        marks = sorted({q for q in (1, 10, 25, 50, 100, 200, 500, 1000) if q <= n} | {n})
        lines += [
            "",
            "Anytime regret (pp, mean ± std over seeds) of the best cell found after N queries:",
            "",
            "| strategy | " + " | ".join(f"N={q}" for q in marks) + " |",
            "| --- |" + " --- |" * len(marks),
        ]
        for s in anytime:
            a = s["anytime"]
            cells = [f"{a['regret_mean'][q - 1]:.2f} ± {a['regret_std'][q - 1]:.2f}" for q in marks]
            lines.append(f"| {s['strategy']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
