"""``pflnas search --strategy evolution|nsga2|random``: a multi-trial search in one run directory.

The run directory gets ``config.yaml`` (the resolved config), ``trials.journal`` (the Optuna study, unless
``trials.storage`` names another storage), and at the end ``trials.csv``, ``pareto.csv`` (two objectives),
``metrics.jsonl`` (see :mod:`~pflnas.multitrial.records`) and ``found.json``: the most accurate trial, or
with two objectives the chosen Pareto point (the rule is in its provenance). Running the same command on
several machines with one ``--storage URL --study NAME`` shares the study; each run directory then reports
the whole study as its worker saw it at the end. ``--resume DIR`` continues the study of DIR.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from optuna.trial import FrozenTrial
from tqdm import tqdm

from pflnas.arch.record import Architecture, save_architecture
from pflnas.config.loader import to_dict
from pflnas.config.search import SearchConfig
from pflnas.device import resolve_device, set_determinism
from pflnas.errors import PflnasError
from pflnas.multitrial.evaluator import TrainingEvaluator
from pflnas.multitrial.records import metrics_rows, write_pareto_csv, write_trials_csv
from pflnas.multitrial.runner import METRICS_ATTR, TrialsResult, run_trials
from pflnas.multitrial.space import params_to_architecture
from pflnas.multitrial.storage import open_storage, redact
from pflnas.rundir import hold
from pflnas.spaces import resolve_space
from pflnas.train.layout import CONFIG, FOUND, METRICS, git_commit
from pflnas.utils_io import atomic_write_text

JOURNAL, TRIALS_CSV, PARETO_CSV = "trials.journal", "trials.csv", "pareto.csv"
DEFAULT_OBJECTIVES = {"nsga2": ("accuracy", "latency")}  # others: ("accuracy",)


def trial_objectives(cfg: SearchConfig) -> tuple[str, ...]:
    """``trials.objectives``, or the strategy's default (NSGA-II: accuracy and latency; else accuracy)."""
    return cfg.trials.objectives or DEFAULT_OBJECTIVES.get(cfg.strategy.name, ("accuracy",))


class MultiTrialRun:
    """One multi-trial search in one run directory; :meth:`run` returns the found architecture."""

    def __init__(self, cfg: SearchConfig, run_dir: str | Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.space = resolve_space(cfg.space)
        self.device = resolve_device(cfg.run.device)
        self.objectives = trial_objectives(cfg)

    @property
    def storage(self) -> str:
        """The storage URL; ``${VAR}`` in it is read from the environment (keep passwords out of files)."""
        given = self.cfg.trials.storage  # a literal password was refused by validate_search_config
        return os.path.expandvars(given) if given is not None else str(self.run_dir / JOURNAL)

    def run(self, resume: bool = False) -> Architecture:
        """Run this worker's trials and write the run directory, holding its lock (:mod:`pflnas.rundir`)."""
        storage = self.storage  # a URL with a literal password is refused before anything is written
        if "://" in storage:  # a database: reach it before writing files or loading data (a typo fails now)
            open_storage(storage)
        with hold(self.run_dir, "search"):
            return self._run(resume, storage)

    def _run(self, resume: bool, storage: str) -> Architecture:
        cfg = self.cfg
        if not resume:
            atomic_write_text(
                self.run_dir / CONFIG,
                yaml.safe_dump({**to_dict(cfg), "resolved_space": self.space.to_dict()}, sort_keys=False),
            )
            if cfg.trials.storage is None:  # a fresh run (--overwrite) starts a fresh study
                for stale in (self.run_dir / JOURNAL, self.run_dir / f"{JOURNAL}.lock"):
                    stale.unlink(missing_ok=True)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        set_determinism(self.device, cfg.run.deterministic)
        evaluator = TrainingEvaluator(cfg, self.device, latency="latency" in self.objectives)
        self.source = evaluator.loaders.source
        t = cfg.trials
        result = run_trials(
            self.space,
            cfg.strategy.name,
            evaluator,
            n_trials=t.n_trials,
            seed=cfg.run.seed,
            objectives=self.objectives,
            population=t.population,
            sample_size=t.sample_size,
            storage=storage,
            study_name=t.study,
            heartbeat_interval=t.heartbeat_interval,
            grace_period=t.grace_period,
            max_retry=t.max_retry,
            callbacks=[self._report] if cfg.run.progress else [],
        )
        return self.write(result)

    def write(self, result: TrialsResult) -> Architecture:
        """Write trials.csv, pareto.csv, metrics.jsonl and found.json; return the found architecture."""
        best = result.best
        if best is None:
            raise PflnasError(
                f"the study {result.study_name!r} has no complete trial; see {self.run_dir / TRIALS_CSV}"
            )
        write_trials_csv(result, self.run_dir / TRIALS_CSV)
        if len(result.objectives) > 1:
            write_pareto_csv(result, self.run_dir / PARETO_CSV)
        rows = metrics_rows(result)
        atomic_write_text(self.run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in rows))
        arch = params_to_architecture(self.space, best.params, self._provenance(result))
        save_architecture(arch, self.run_dir / FOUND)
        values = ", ".join(f"{o.key} {v:.4g}" for o, v in zip(result.objectives, best.values or ()))
        front = f", Pareto front of {len(result.pareto)}" if len(result.objectives) > 1 else ""
        tqdm.write(f"{len(result.complete)} complete trials{front}; chose trial {best.number}: {values}")
        return arch

    def _report(self, study: optuna.Study, trial: FrozenTrial) -> None:
        metrics = trial.user_attrs.get(METRICS_ATTR) or {}
        parts = [f"{k} {metrics[k]:.4g}" for k in ("accuracy", "latency_ms", "params") if k in metrics]
        took = trial.duration.total_seconds() if trial.duration is not None else math.nan
        retry = (
            f" (retry of {trial.system_attrs['failed_trial']})"
            if "failed_trial" in trial.system_attrs
            else ""
        )
        tqdm.write(
            f"trial {trial.number}{retry} {trial.state.name.lower()}: {'  '.join(parts)}  ({took:.1f} s)"
        )

    def _provenance(self, result: TrialsResult) -> dict[str, Any]:
        from pflnas import __version__

        cfg, best = self.cfg, result.best
        assert best is not None and best.values is not None
        return {
            "strategy": cfg.strategy.name,
            "seed": cfg.run.seed,
            "dataset": cfg.data.dataset,
            "data_source": self.source,
            "epochs": cfg.trials.epochs,
            "device": str(self.device)
            if self.device.type == "cpu"
            else torch.cuda.get_device_name(self.device),
            "wall_time_s": round(result.wall_time_s, 3),
            "trial": best.number,
            "objectives": {o.name: v for o, v in zip(result.objectives, best.values)},
            "metrics": best.metrics,
            "selection": result.selection,
            "study": result.study_name,
            "storage": result.storage,
            "trials_complete": len(result.complete),
            "pareto_size": len(result.pareto),
            "pflnas_version": __version__,
            "git_commit": git_commit(),
            "torch_version": torch.__version__,
            "optuna_version": optuna.__version__,
            "python": platform.python_version(),
            "config": {**to_dict(cfg), "trials": {**to_dict(cfg.trials), "storage": redact(self.storage)}},
        }
