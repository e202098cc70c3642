"""Seeds run at once in spawned worker processes (``pflnas bench nb201 --jobs N``).

Several launch-bound searches share one GPU well, and proxy-trained multi-trial seeds are independent; on a
CPU each worker gets ``cpu_count // workers`` threads. Each worker saves its seed's result file itself, so
an interrupted bench keeps every finished seed; the first failure stops the rest and is raised as one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pflnas.bench.nb201 import load_nb201_table
from pflnas.bench.runner import MultiTrialPlan, run_multitrial_seed, run_oneshot_seed, save_seed
from pflnas.bench.selection import SelectionSpec, SignalFactory
from pflnas.config.search import SearchConfig
from pflnas.errors import ConfigError, PflnasError


@dataclass(frozen=True)
class OneShotJob:
    """One pending one-shot seed: its search config, run directory, result file and settings."""

    cfg: SearchConfig
    run_dir: Path
    result_path: Path
    settings: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.cfg.strategy.name} seed {self.cfg.run.seed}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "search.log"

    def run(self, threads: int) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.run.threads is None:  # share the cores between the jobs
            cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, threads=threads))
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, progress=False))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return run_oneshot_seed(load_nb201_table(), cfg, self.run_dir)


@dataclass(frozen=True)
class MultiTrialJob:
    """One pending multi-trial seed: the plan, the selection that builds its signal, and its files."""

    plan: MultiTrialPlan
    spec: SelectionSpec
    seed: int
    result_path: Path
    settings: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.plan.strategy} ({self.plan.selection}) seed {self.seed}"

    @property
    def log_path(self) -> Path:
        return self.result_path.with_suffix(".log")

    def run(self, threads: int) -> dict[str, Any]:
        import torch

        torch.set_num_threads(threads)
        table = load_nb201_table()
        factory = SignalFactory(self.spec, table)
        try:
            return run_multitrial_seed(table, self.plan, self.seed, factory.for_seed(self.seed))
        finally:
            factory.close()


Job = OneShotJob | MultiTrialJob


def _run_job(job: Job, threads: int) -> dict[str, Any]:
    """Worker process: one seed, its output in the job's log file; saves its result."""
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(job.log_path, "a", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        result = job.run(threads)
    save_seed(job.result_path, job.settings, result)
    return result


def run_jobs(
    jobs: Sequence[Job],
    workers: int,
    log: Callable[[str], None],
    *,
    data_dir: str | None = None,
    warm_data: bool = True,
) -> None:
    """Run ``jobs`` in ``workers`` spawned processes at once (see the module docstring). ``warm_data``:
    decode CIFAR-10 (from ``data_dir``) into the cache once first, not once per worker."""
    if not jobs:
        return
    if warm_data:
        from pflnas.data import load_dataset

        load_dataset("cifar10", data_dir)
    threads = max(1, (os.cpu_count() or 1) // workers)
    log(f"running {len(jobs)} seeds in {workers} processes ({threads} threads each)")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        futures: dict[Future, Job] = {pool.submit(_run_job, job, threads): job for job in jobs}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                job = futures[future]
                exc = future.exception()
                if exc is not None:
                    for other in pending:
                        other.cancel()
                    why = str(exc) if isinstance(exc, PflnasError) else f"{type(exc).__name__}: {exc}"
                    raise ConfigError(f"{job.name} failed ({why}); its log: {job.log_path}")
                log(f"{job.name}: done in {future.result()['wall_time_s']:.1f} s")
