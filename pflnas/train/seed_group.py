"""N seeds' searches of one config as one grouped network (``pflnas search --seeds 0-9``).

On a GPU a search step is bound by the number of kernels, not by arithmetic, so N searches folded into one
network (:class:`~pflnas.supernet.grouped.GroupedSupernet`: every op grouped by seed, in the form of the
space's kind) cost about the kernels of one. Each seed still is its own search: a
:class:`~pflnas.train.search.SearchRun` per seed is set up exactly as ``pflnas search --seed s`` sets it up
(its data split, batch order and augmentation, its initial weights and alphas), and the group trains the
numbers those runs hold: the loss is the sum of the seeds' mean losses (so each seed's gradients are its
own), clipping and second-order DARTS' step size are per seed (the supernet's seed hooks), and the
optimizers act elementwise. At every epoch's end the group's state goes back into the per-seed runs
(:mod:`pflnas.supernet.grouped_state`), which write their ordinary run directories: config.yaml (with
``resolved_group``), metrics.jsonl, the checkpoint, found.json. A group resumes from those checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from pflnas.arch.record import Architecture
from pflnas.config.search import SearchConfig
from pflnas.config.validate import resolve_layout
from pflnas.errors import ConfigError, PflnasError
from pflnas.rundir import hold
from pflnas.spaces import resolve_space
from pflnas.spaces.config import SpaceConfig
from pflnas.strategies import StepContext, Strategy, create_strategy
from pflnas.supernet.grouped import GroupedSupernet, seed_blocks
from pflnas.supernet.grouped_state import from_grouped, join_optimizer, split_optimizer, to_grouped
from pflnas.train.checkpoint import remove_stale_temp_files, save_checkpoint
from pflnas.train.epoch_record import EpochSums, epoch_line, epoch_record
from pflnas.train.graph_step import GraphedStep
from pflnas.train.group_rules import group_refusal
from pflnas.train.guard import FiniteGuard, NonFiniteError
from pflnas.train.layout import CHECKPOINT
from pflnas.train.loaders import evaluate_seeds
from pflnas.train.progress import Say, quiet, startup_lines
from pflnas.train.search import SearchRun
from pflnas.train.search_state import Position
from pflnas.train.search_step import SearchStep, sgd_virtual_step
from pflnas.train.signals import StopSignals, stop_after_saving
from pflnas.train.step_checks import StepChecks

Batch = tuple[Tensor, Tensor]


def group_config(cfg: SearchConfig, seed: int) -> SearchConfig:
    """``cfg`` with ``run.seed = seed``: what ``pflnas search --seed seed`` would run."""
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, seed=seed))


def check_groupable(cfg: SearchConfig, strategy: Strategy, layout: str, space_kind: str) -> None:
    """One line for what a grouped search cannot run (:func:`~pflnas.train.group_rules.group_refusal`)."""
    why = group_refusal(cfg, seed_groups=strategy.seed_groups, space_kind=space_kind, layout=layout)
    if why:
        raise ConfigError(f"--seeds cannot be used: {why} (or run the seeds one at a time with --seed)")


class SeedGroupRun:
    """The searches of ``cfg`` for ``seeds`` (one run directory each, in ``run_dirs``) as one network."""

    def __init__(
        self,
        cfg: SearchConfig,
        seeds: list[int],
        run_dirs: list[Path],
        space: SpaceConfig | None = None,
    ):
        if len(seeds) != len(run_dirs) or len(set(seeds)) != len(seeds) or not seeds:
            raise ConfigError(f"a seed group needs distinct seeds, one run directory each; got {seeds}")
        self.cfg, self.seeds, self.run_dirs = cfg, list(seeds), [Path(d) for d in run_dirs]
        self.space = space or resolve_space(cfg.space)
        self.runs = [
            SearchRun(group_config(cfg, s), d, space=self.space) for s, d in zip(self.seeds, self.run_dirs)
        ]
        self.device = self.runs[0].device

    # --- setup -------------------------------------------------------------------------------------
    def setup(self, say: Say = quiet) -> None:
        """Each seed's run set up as its single-seed search would be, then the group holding their
        numbers: the grouped supernet, its strategy, optimizer, schedule and step body."""
        strategy = create_strategy(self.cfg.strategy.name, self.cfg.arch)
        check_groupable(
            self.cfg,
            strategy,
            strategy.layout_for(resolve_layout(self.cfg.run.share_param_free, self.cfg.space.layout)),
            self.space.kind,
        )
        for seed, run in zip(self.seeds, self.runs):
            say(f"seed {seed}: its data split and supernet")
            run.setup(quiet)
        first = self.runs[0]
        n = len(self.runs)
        model = GroupedSupernet(
            self.space, first.loaders.num_classes, n, first.loaders.in_channels, **first.supernet_options
        ).to(self.device)
        model.load_state_dict(to_grouped([r.model.state_dict() for r in self.runs], model))
        self.model = model
        self.strategy = create_strategy(self.cfg.strategy.name, self.cfg.arch)
        self.strategy.attach(model)
        self.warmup = first.warmup
        w = self.cfg.weights
        self.weights = model.weight_parameters()
        self.optimizer = torch.optim.SGD(
            self.weights, lr=w.lr, momentum=w.momentum, weight_decay=w.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=self.cfg.run.epochs, eta_min=w.lr_min
        )
        run = self.cfg.run
        self.guard = FiniteGuard(run.nonfinite, run.nonfinite_max_skips, self.device, kept=self._kept)
        self.checks = StepChecks(self.guard, model, self.strategy, graphed=run.cuda_graph)  # type: ignore[arg-type]
        self.step_body = SearchStep(
            model,  # type: ignore[arg-type]
            self.strategy,
            self.optimizer,
            self.weights,
            w.grad_clip,
            autocast=first.autocast,
            check_arch=None if run.cuda_graph else self.checks.arch,  # a graph's outputs are checked after
            check_weights=None if run.cuda_graph else self.checks.weights,
        )
        optimizers = [self.optimizer, *self.strategy.optimizers()]
        self.graphed = GraphedStep(self.step_body, optimizers, self.device) if run.cuda_graph else None
        self.start = Position()
        self.elapsed = 0.0
        self.stop = StopSignals()

    # --- moving state between the group and the per-seed runs --------------------------------------
    def to_seeds(self) -> None:
        """The group's weights, alphas, BatchNorm statistics, optimizer and schedule states into each
        seed's run (what that seed's own search would hold now)."""
        model = self.model
        models = [r.model for r in self.runs]
        for run, state in zip(self.runs, from_grouped(model.state_dict(), model)):
            run.model.load_state_dict(state)
            run.scheduler.load_state_dict(self.scheduler.state_dict())
            run.elapsed = self.elapsed
        split_optimizer(model, self.optimizer, models, [r.optimizer for r in self.runs])
        for i, group_opt in enumerate(self.strategy.optimizers()):
            split_optimizer(model, group_opt, models, [r.strategy.optimizers()[i] for r in self.runs])

    def from_seeds(self) -> None:
        """The inverse of :meth:`to_seeds` (a resumed group)."""
        model = self.model
        models = [r.model for r in self.runs]
        model.load_state_dict(to_grouped([m.state_dict() for m in models], model))
        self.scheduler.load_state_dict(self.runs[0].scheduler.state_dict())
        join_optimizer(model, self.optimizer, models, [r.optimizer for r in self.runs])
        for i, group_opt in enumerate(self.strategy.optimizers()):
            join_optimizer(model, group_opt, models, [r.strategy.optimizers()[i] for r in self.runs])

    def _restore(self) -> None:
        positions = []
        for run in self.runs:
            if not os.path.lexists(run.run_dir / CHECKPOINT):
                raise PflnasError(
                    f"{run.run_dir} has no checkpoint while the other members of its group have; the group "
                    "cannot continue as one: start it again with --overwrite"
                )
            positions.append(run.checkpoint.restore(run.run_dir / CHECKPOINT, self.device))
        where = {(p.epoch, p.step) for p in positions}
        if len(where) > 1:
            raise PflnasError(
                f"the group's checkpoints stand at different (epoch, step) {sorted(where)} (a kill while "
                "they were written); resume each member alone: delete resolved_group from its config.yaml, "
                "then pflnas search --resume DIR"
            )
        self.from_seeds()
        self.start = dataclasses.replace(positions[0], partial=None)
        self.partials = [p.partial for p in positions]
        self.elapsed = positions[0].elapsed
        for run in self.runs:
            run.metrics.truncate_to(self.start.epoch)
            remove_stale_temp_files(run.run_dir)

    # --- the loop ----------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> list[Architecture]:
        """Search (or continue) every seed and write each seed's found.json; holds every run directory."""
        with contextlib.ExitStack() as held:
            for d in self.run_dirs:
                held.enter_context(hold(d, "search"))
            return self._search(resume)

    def _search(self, resume: bool) -> list[Architecture]:
        with startup_lines(self.cfg.run.progress) as say:
            self.setup(say)
        self.partials: list[dict[str, float] | None] = [None] * len(self.runs)
        saved = [os.path.lexists(r.run_dir / CHECKPOINT) for r in self.runs]
        if resume and any(saved):
            self._restore()  # a member without a checkpoint is named there
        else:
            group = self.group_record()
            for run in self.runs:
                run.start_fresh({"resolved_group": group[str(run.run_dir)]})
        with StopSignals() as self.stop:
            try:
                self._epochs()
            except NonFiniteError as exc:  # name the seeds: the others' runs were fine
                bad = ", ".join(str(self.seeds[i]) for i in nonfinite_seeds(self.model))
                raise NonFiniteError(
                    f"{exc} (seeds whose numbers went non-finite: {bad or 'none'})"
                ) from None
        self.to_seeds()
        found = []
        for run in self.runs:
            arch = run.strategy.export(run.provenance())
            run.save_found(arch)
            found.append(arch)
        return found

    def group_record(self) -> dict[str, dict[str, Any]]:
        """Per run directory, its config.yaml's ``resolved_group``: the seeds and every member's directory
        relative to it (so ``--resume`` of any member finds the others, wherever the tree was moved)."""
        out = {}
        for d in self.run_dirs:
            dirs = [str(Path(_relative(m, d))) for m in self.run_dirs]
            out[str(d)] = {"seeds": self.seeds, "dirs": dirs}
        return out

    def _epochs(self) -> None:
        for epoch in range(self.start.epoch, self.cfg.run.epochs):
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            search_arch = epoch >= self.warmup
            sums = self._steps(epoch, search_arch)
            self.guard.flush()
            validation = evaluate_seeds(
                self.model, [r.loaders.evaluate for r in self.runs], self.runs[0].autocast
            )
            self.scheduler.step()
            self.elapsed += time.perf_counter() - t0
            self.to_seeds()
            seen = sums.seen
            for s, run in enumerate(self.runs):
                means = _seed_sums(sums, s).means(seen)
                record = epoch_record(
                    run.cfg,
                    run.strategy,
                    epoch,
                    lr,
                    means,
                    validation[s],
                    search_arch=search_arch,
                    latency=None,
                    skipped=0,
                )
                record["epoch_time"] = round(time.perf_counter() - t0, 3)
                run.metrics.append(record)
                save_checkpoint(run.state(epoch + 1), run.run_dir / CHECKPOINT)
                self._say(f"seed {run.cfg.run.seed}: " + epoch_line(record, self.cfg.run.epochs))
            if self.stop.requested(force=True):
                self._stopped(epoch + 1, 0, None)

    def _steps(self, epoch: int, search_arch: bool) -> EpochSums:
        runs = self.runs
        for run in runs:
            run.loaders.train.set_epoch(epoch)
            run.loaders.arch.set_epoch(epoch)
        ctx = StepContext(
            loss=self.step_body.loss,
            virtual_step=sgd_virtual_step(self.optimizer),
            lr=self.optimizer.param_groups[0]["lr"],
            epoch=epoch,
            epochs=self.cfg.run.epochs,
        )
        start = self.start.step
        sums = _group_sums(self.partials if start else [None] * len(runs), self.device)
        self.start.step, self.partials = 0, [None] * len(runs)
        n = len(runs)
        loaders = [r.loaders.train for r in runs] + [r.loaders.arch for r in runs]
        steps = min(len(loader) for loader in loaders)
        self.model.train()

        def run_step(train: Batch, arch: Batch) -> dict[str, Tensor] | None:
            return self.step_body(train, arch, ctx, search_arch)

        if self.graphed is not None:  # this epoch's learning rate and schedule: captured anew
            self.graphed.set_body(run_step)
            run_step = self.graphed  # type: ignore[assignment]
        bar = tqdm(
            total=steps,
            initial=start,
            desc=f"epoch {epoch + 1}/{self.cfg.run.epochs} ({n} seeds)",
            leave=False,
            disable=not self.cfg.run.progress or None,
            dynamic_ncols=True,
        )
        for step, batches in enumerate(zip(*loaders)):
            if step < start:
                continue
            self.guard.at(epoch, step)
            train, arch = _stack(batches[:n]), _stack(batches[n:])
            out = run_step(train, arch)
            assert out is not None  # run.nonfinite=stop: a bad batch raises
            self.checks.outputs(out, search_arch)
            sums.add(out, train[1].shape[-1])
            self.guard.step_done()
            bar.update(1)
            if self.stop.requested(step):
                bar.close()
                self._stopped(epoch, step + 1, sums)
        bar.close()
        return sums

    # --- stopping -----------------------------------------------------------------------------------
    def _kept(self) -> str:
        return self.runs[0].kept() + " (and so are the other seeds' checkpoints)"

    def _stopped(self, epoch: int, step: int, sums: EpochSums | None) -> None:
        """SIGINT/SIGTERM: every seed's checkpoint saved at the same point, then the signal's exception."""
        if step:
            assert sums is not None
            self.guard.flush()
            self.to_seeds()
            for s, run in enumerate(self.runs):
                partial = _seed_sums(sums, s).partial()
                save_checkpoint(run.state(epoch, step, partial), run.run_dir / CHECKPOINT)
        where = f"epoch {epoch + 1} step {step}" if step else f"the end of epoch {epoch}"
        stop_after_saving("search", self.stop.signum or 0, where, self.run_dirs[0], True)

    def _say(self, line: str) -> None:
        tqdm.write(line)


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


def _stack(batches: tuple[Batch, ...]) -> Batch:
    """The seeds' batches as one: ``[N, B, ...]`` images and ``[N, B]`` labels."""
    return torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])


def _group_sums(partials: list[dict[str, float] | None], device: torch.device) -> EpochSums:
    """The group's running sums, one entry per seed (each seed's from its checkpoint when resuming)."""
    parts = [EpochSums.resume(p, device) for p in partials]
    values = {k: torch.stack([p.values[k] for p in parts]) for k in parts[0].values}
    return EpochSums(values, parts[0].seen, 0)


def _seed_sums(sums: EpochSums, seed: int) -> EpochSums:
    return EpochSums({k: v[seed] for k, v in sums.values.items()}, sums.seen, sums.skipped)


@torch.no_grad()
def nonfinite_seeds(model: GroupedSupernet) -> list[int]:
    """The seed indices whose weights, alphas or their gradients hold a NaN or Inf."""
    bad = torch.zeros(model.seeds, dtype=torch.bool)
    for p in model.parameters():
        for t in (p, p.grad):
            if t is not None:
                bad |= ~torch.isfinite(seed_blocks(t.detach(), model.seeds)).all(1).cpu()
    return [i for i, b in enumerate(bad.tolist()) if b]
