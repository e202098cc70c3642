"""The supernet search loop (DARTS protocol): alternate an architecture step on a held-out batch and a
weight step on a training batch; log every epoch; checkpoint atomically; write found.json at the end.

:class:`SearchRun` follows the ``setup / run / state`` template: setup builds everything once (including
the architecture objective, latency term and all), :meth:`SearchRun._train_epoch` runs the step body
(:mod:`pflnas.train.search_step`) over an epoch's batches, and the checkpoint
(:mod:`pflnas.train.search_state`) and the per-epoch record (:mod:`pflnas.train.epoch_record`) live apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor
from tqdm import tqdm

from pflnas.arch.record import Architecture, save_architecture
from pflnas.config.loader import to_dict
from pflnas.config.search import SearchConfig
from pflnas.config.validate import resolve_layout
from pflnas.device import build_within_memory, resolve_device, seed_everything, set_determinism
from pflnas.errors import ConfigError
from pflnas.measure.latency_objective import LatencyTerm
from pflnas.rundir import hold
from pflnas.spaces import resolve_space
from pflnas.spaces.config import SpaceConfig
from pflnas.strategies import StepContext, Strategy, create_strategy
from pflnas.strategies.base import SINGLE_PATH_WHY
from pflnas.strategies.subnet_eval import SubnetEvaluator
from pflnas.supernet import Supernet
from pflnas.supernet.network import check_supernet_options, construct_supernet
from pflnas.train.checkpoint import remove_stale_temp_files, save_checkpoint
from pflnas.train.dist_search import AlphaDump, SearchSync, check_global_batch
from pflnas.train.distributed import DistInfo
from pflnas.train.epoch_record import EpochSums, epoch_line, epoch_record
from pflnas.train.graph_step import GraphedStep, compile_forward
from pflnas.train.guard import FiniteGuard
from pflnas.train.layout import CHECKPOINT, CONFIG, EVOLUTION, FOUND, METRICS, git_commit
from pflnas.train.loaders import check_batches, evaluate, make_loaders
from pflnas.train.metrics import MetricsLog
from pflnas.train.progress import Say, quiet, startup_lines
from pflnas.train.search_latency import latency_term
from pflnas.train.search_state import Position, SearchCheckpoint
from pflnas.train.search_step import SearchStep, sgd_virtual_step
from pflnas.train.signals import StopSignals, stop_after_saving
from pflnas.train.step_checks import StepChecks
from pflnas.utils_io import atomic_write_text

Batch = tuple[Tensor, Tensor]


class SearchRun:
    """One search in one run directory. ``run()`` returns the found architecture."""

    def __init__(
        self,
        cfg: SearchConfig,
        run_dir: str | Path,
        info: DistInfo | None = None,
        space: SpaceConfig | None = None,
    ):
        """``space``: ``cfg``'s space when the caller resolved it already (the CLI does, to fail early)."""
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.space = space or resolve_space(cfg.space)
        # torchrun: ``info`` from init_distributed (pflnas.train.dist_search says how ranks stay in step)
        self.info = info or DistInfo(0, 1, 0, resolve_device(cfg.run.device))
        self.device = self.info.device
        self.sync = SearchSync(self.info)
        self.alpha_dump = AlphaDump(self.info.rank)  # PFLNAS_DEBUG_ALPHA_DIR: alphas after every step

    # --- setup -------------------------------------------------------------------------------------
    def setup(self, say: Say = quiet) -> None:
        """Everything before the first step; ``say`` announces the slow parts (data, supernet)."""
        cfg = self.cfg
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        seed_everything(cfg.run.seed)
        set_determinism(self.device, cfg.run.deterministic)
        self.strategy: Strategy = create_strategy(cfg.strategy.name, cfg.arch)
        self.supernet_options = self.strategy.supernet_options()
        asked = resolve_layout(cfg.run.share_param_free, cfg.space.layout)
        self.layout = self.strategy.layout_for(asked)  # config.yaml records it as resolved_layout
        if self.layout != asked:
            say(f"{cfg.strategy.name} runs space.layout={self.layout} for {asked}: {SINGLE_PATH_WHY}")
        check_supernet_options(self.space, **self.supernet_options, layout=self.layout)  # before the data
        if cfg.run.compile and self.strategy.dynamic_path:
            raise ConfigError(
                f"run.compile does not suit {self.strategy.name!r}: its forward changes path every step, so "
                "torch.compile would recompile again and again; drop run.compile"
            )
        self._check_cuda_graph()
        check_global_batch(cfg.data.batch_size, self.info)
        say(f"loading {cfg.data.dataset} (the first load decodes the images and caches them)")
        self.loaders = make_loaders(cfg, self.device, self.info)
        check_batches(cfg, self.loaders)
        say(f"building the {self.space.name} supernet for {cfg.strategy.name} on {self.device}")
        self.model = self._build_supernet()
        # the compiled forward serves the loss closures; the strategy keeps the plain module
        self.forward = compile_forward(self.model, cfg.run.cuda_graph) if cfg.run.compile else self.model
        self.strategy.attach(self.model)
        given = cfg.strategy.warmup_epochs
        self.warmup = self.strategy.default_warmup_epochs(cfg.run.epochs) if given is None else given
        w = cfg.weights
        self.weights = self.model.weight_parameters()
        self.optimizer = torch.optim.SGD(
            self.weights, lr=w.lr, momentum=w.momentum, weight_decay=w.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=cfg.run.epochs, eta_min=w.lr_min
        )
        self._build_step()
        self.checkpoint = SearchCheckpoint(
            cfg, self.space, self.model, self.optimizer, self.scheduler, self.strategy, self.sync
        )
        self.metrics = MetricsLog(self.run_dir / METRICS)
        self.start = Position()  # where the first epoch begins (a resumed run: the checkpoint's)
        self.elapsed = 0.0
        self._epoch_start = time.perf_counter()
        self.latency: LatencyTerm | None = None  # latency.weight > 0: set by run()
        self.arch_loss: Callable[[Batch], Tensor] | None = None  # the architecture objective, if not CE
        self.stop = StopSignals()  # replaced by the one run() enters

    def _build_supernet(self) -> Supernet:
        cfg, loaders = self.cfg, self.loaders
        model: Supernet = build_within_memory(  # type: ignore[assignment]
            lambda: construct_supernet(  # options checked in setup
                self.space,
                loaders.num_classes,
                loaders.in_channels,
                cfg.run.share_param_free,
                image_size=loaders.image_size,
                layout=self.layout,
                **self.supernet_options,
            ),
            self.device,
            "the supernet",
            "lower space.init_channels / space.layers (block spaces: the skeleton's widths)",
            copies=3,  # weights, gradients, momentum
        )
        return model.to(memory_format=torch.channels_last) if cfg.run.channels_last else model

    def _build_step(self) -> None:
        """The step body with the loop's all-reduce and NaN/Inf checks (a captured graph checks its
        outputs instead), and its CUDA-graph replay under ``run.cuda_graph``."""
        run = self.cfg.run
        self.guard = FiniteGuard(
            run.nonfinite,
            run.nonfinite_max_skips,
            self.device,
            kept=self.kept,
            reduce=self.sync.sum_ if self.info.distributed else None,
        )
        self.checks = StepChecks(self.guard, self.model, self.strategy, graphed=run.cuda_graph)
        self._named_weights, self._named_alphas = self.checks.named_weights, self.checks.named_alphas
        self.step_body = SearchStep(
            self.model,
            self.strategy,
            self.optimizer,
            self.weights,
            self.cfg.weights.grad_clip,
            forward=self.forward,
            autocast=self.autocast,
            reduce_grads=self.sync.reduce_grads,  # torchrun: one all-reduce per half, before the checks
            check_arch=None if run.cuda_graph else self.checks.arch,
            check_weights=None if run.cuda_graph else self.checks.weights,
        )
        self.graphed: GraphedStep | None = None
        if run.cuda_graph:  # see pflnas.train.graph_step: one launch per step instead of thousands
            optimizers = [self.optimizer, *self.strategy.optimizers()]
            # run.compile: the compiled forward is captured too; each new body gets one eager step first, so
            # torch.compile compiles a new context (e.g. the first architecture step) outside the capture
            self.graphed = GraphedStep(
                self.step_body,  # type: ignore[arg-type]
                optimizers,
                self.device,
                warmup_per_body=1 if run.compile else 0,
            )

    def _check_cuda_graph(self) -> None:
        run = self.cfg.run
        if not run.cuda_graph:
            return
        why = None
        if self.device.type != "cuda":
            why = f"it needs a CUDA device (run.device resolves to {self.device.type})"
        elif self.strategy.dynamic_path:
            why = f"{self.strategy.name!r} runs another path every step, which a captured graph cannot"
        elif self.info.distributed:
            why = "it runs in a single process for now (not under torchrun)"
        elif run.nonfinite == "skip":
            why = "run.nonfinite=skip must decide before each optimizer step, inside the graph"
        if why:
            raise ConfigError(f"run.cuda_graph cannot be used: {why}; drop run.cuda_graph")

    def autocast(self):
        if not self.cfg.run.amp:
            return contextlib.nullcontext()
        # a captured graph must not reuse autocast's cached weight casts (they would be stale on replay)
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, cache_enabled=not self.cfg.run.cuda_graph
        )

    # --- checkpoints -------------------------------------------------------------------------------
    def state(
        self, epochs_done: int, step: int = 0, partial: dict[str, float] | None = None
    ) -> dict[str, Any]:
        """The checkpoint after ``epochs_done`` epochs (and ``step`` steps of the next, with its running
        sums ``partial``); every rank builds it (a collective under torchrun), rank 0 writes it."""
        return self.checkpoint.state(Position(epochs_done, step, partial, self.elapsed, self.guard.skipped))

    def _restore(self) -> None:
        self.start = self.checkpoint.restore(self.run_dir / CHECKPOINT, self.device)  # rank 0's file
        self.guard.skipped = self.start.skipped
        self.elapsed = self.start.elapsed
        if self.info.is_main:
            self.metrics.truncate_to(self.start.epoch)
            remove_stale_temp_files(self.run_dir)  # a kill inside an atomic write leaves its temp file

    # --- the loop ----------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> Architecture:
        """Search (or continue a search) and write found.json; rank 0 holds the run directory's lock
        throughout, so no second process writes into it (:mod:`pflnas.rundir`)."""
        if not self.info.is_main:  # under torchrun only rank 0 writes
            return self._search(resume)
        with hold(self.run_dir, "search"):
            return self._search(resume)

    def _search(self, resume: bool) -> Architecture:
        main = self.info.is_main
        with startup_lines(self.cfg.run.progress and main) as say:  # on stderr, before the bars
            self.setup(say)
        if self.cfg.latency.weight > 0:  # the architecture objective, composed once
            self.latency = latency_term(
                self.cfg,
                self.strategy,
                self.model,
                self.sync,
                self.run_dir,
                resume=resume,
                image_size=self.loaders.image_size,
                device=self.device,
            )
            self.arch_loss = self.latency.objective(self.step_body.loss)
        # lexists: a symlink loop or broken link there is named when loaded, not taken for no checkpoint
        if resume and self.sync.from_main(lambda: os.path.lexists(self.run_dir / CHECKPOINT)):
            self._restore()
        elif main:
            self.start_fresh()
        self.alpha_dump.step(self.start.epoch, -1, self.model.arch_parameters())  # before the first step
        reduce = self.sync.sum_ if self.info.distributed else None
        with StopSignals(reduce, self.device) as self.stop:  # SIGINT/SIGTERM: save, exit
            self._epochs()
        history = self._after_training()
        if history is not None and main:
            atomic_write_text(self.run_dir / EVOLUTION, "".join(json.dumps(row) + "\n" for row in history))
        arch = self.strategy.export(self.sync.from_main(self.provenance))  # rank 0's record everywhere
        self.save_found(arch)
        return arch

    def start_fresh(self, extra: dict[str, Any] | None = None) -> None:
        (self.run_dir / FOUND).unlink(missing_ok=True)  # a replaced run's record never outlives it
        space, layout = self.space.to_dict(), self.layout
        resolved = {**to_dict(self.cfg), "resolved_space": space, "resolved_layout": layout, **(extra or {})}
        atomic_write_text(self.run_dir / CONFIG, yaml.safe_dump(resolved, sort_keys=False))
        self.metrics.truncate_to(0)

    def _after_training(self) -> list[dict[str, Any]] | None:
        """A one-shot strategy (SPOS) searches the trained supernet with inherited weights (the loop's
        data); returns its scored candidates."""
        self.loaders.train.set_epoch(self.cfg.run.epochs)  # the same BatchNorm batches after a resume
        with SubnetEvaluator(
            self.model,
            self.loaders.train,
            self.loaders.evaluate,
            self.cfg.spos,
            seed=self.cfg.run.seed,
            autocast=self.autocast,
            progress=self.cfg.run.progress and self.info.is_main,
            sync=self.sync,
        ) as evaluator:
            return self.strategy.after_training(evaluator)

    def _epochs(self) -> None:
        for epoch in range(self.start.epoch, self.cfg.run.epochs):
            t0 = self._epoch_start = time.perf_counter()
            record = self._train_epoch(epoch)
            self.scheduler.step()
            self.elapsed += time.perf_counter() - t0
            record["epoch_time"] = round(time.perf_counter() - t0, 3)
            state = self.state(epoch + 1)  # on every rank (it gathers their RNG states under torchrun)
            if self.info.is_main:
                self.metrics.append(record)
                save_checkpoint(state, self.run_dir / CHECKPOINT)
            if self.stop.requested(force=True):  # a signal during the evaluation: saved just now
                self._stopped(epoch + 1, 0)

    def save_found(self, arch: Architecture) -> None:
        """Rank 0 writes found.json once every rank has derived the same one (checked under torchrun:
        everything but the provenance, which may hold a rank's own timings; rank 0's is written)."""
        record = arch.to_dict()
        self.alpha_dump.export(json.dumps(record, sort_keys=True))
        derived = {k: v for k, v in record.items() if k != "provenance"}
        self.sync.agree(json.dumps(derived, sort_keys=True), f"the found architecture ({FOUND})")
        if self.info.is_main:
            save_architecture(arch, self.run_dir / FOUND)

    # --- one epoch ---------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train epoch ``epoch`` and return its record (weights-only warm-up epochs come first)."""
        lr = self.optimizer.param_groups[0]["lr"]
        search_arch = epoch >= self.warmup
        sums = self._steps(epoch, search_arch)
        self.guard.flush()  # nothing non-finite goes into a record or a checkpoint
        seen = self.sync.sum_counts(sums.values, sums.seen)  # torchrun: global sums, for rank 0's record
        model = self.model
        self.sync.average_bn_statistics(model)  # every rank evaluates, saves and exports the same model
        self.sync.verify_model(model, f"at the end of epoch {epoch + 1}", buffers=True)
        validation = evaluate(model, self.loaders.evaluate, self.autocast, self.sync)
        record = epoch_record(
            self.cfg,
            self.strategy,
            epoch,
            lr,
            sums.means(seen),
            validation,
            search_arch=search_arch,
            latency=self.latency,
            skipped=sums.skipped,
        )
        self._say(epoch_line(record, self.cfg.run.epochs))
        return record

    def _steps(self, epoch: int, search_arch: bool) -> EpochSums:
        """The epoch's steps (from the checkpoint's step when resuming inside it), with their sums."""
        cfg, loaders, model = self.cfg, self.loaders, self.model
        for loader in (loaders.train, loaders.arch):
            loader.set_epoch(epoch)  # a resumed epoch's batches depend only on (seed, epoch)
        run_step = self._step_runner(self._context(epoch), search_arch)
        start, sums = self.start.step, EpochSums.resume(self.start.partial, self.device)
        self.start.step, self.start.partial = 0, None  # consumed: later epochs start at their first step
        steps = min(len(loaders.train), len(loaders.arch))
        model.train()
        bar = tqdm(
            total=steps,
            initial=start,
            desc=f"epoch {epoch + 1}/{cfg.run.epochs}",
            leave=False,
            disable=not (cfg.run.progress and self.info.is_main) or None,
            dynamic_ncols=True,
        )
        for step, (train_batch, arch_batch) in enumerate(zip(loaders.train, loaders.arch)):
            if step < start:
                continue
            self.guard.at(epoch, step)
            out = run_step(train_batch, arch_batch)
            if out is None:  # run.nonfinite=skip: dropped before an optimizer applied it
                sums.skipped += 1
            else:
                self.checks.outputs(out, search_arch)
                sums.add(out, len(train_batch[1]))
            self.guard.step_done()
            if cfg.run.verify_sync:
                self.sync.verify_model(model, f"after epoch {epoch + 1} step {step + 1}")
            self.alpha_dump.step(epoch, step, model.arch_parameters())
            bar.update(1)
            if self.stop.requested(step):
                bar.close()
                self._stopped(epoch, step + 1, sums.partial())
            if not bar.disable and (step % 10 == 0 or step == steps - 1):  # host sync: every 10 steps
                bar.set_postfix(**sums.postfix(search_arch))
        bar.close()
        return sums

    def _context(self, epoch: int) -> StepContext:
        """What the strategy gets for this epoch's architecture steps."""
        return StepContext(
            loss=self.step_body.loss,
            virtual_step=sgd_virtual_step(self.optimizer),
            lr=self.optimizer.param_groups[0]["lr"],
            epoch=epoch,
            epochs=self.cfg.run.epochs,
            average=self.sync.average,  # torchrun: gradients a strategy uses itself (darts2's unrolled step)
            arch_loss=self.arch_loss,
        )

    def _step_runner(self, ctx: StepContext, search_arch: bool) -> Callable[[Batch, Batch], Any]:
        def step_fn(train_batch: Batch, arch_batch: Batch) -> dict[str, Tensor] | None:
            return self.step_body(train_batch, arch_batch, ctx, search_arch)

        if self.graphed is None:
            return step_fn
        self.graphed.set_body(step_fn)  # this epoch's LR and schedule: capture the step anew
        return self.graphed

    # --- stopping -----------------------------------------------------------------------------------
    def kept(self) -> str:
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            return "no checkpoint was written yet"
        return f"{path} is left as it was (the last good state; --resume {self.run_dir} continues from it)"

    def _stopped(self, epoch: int, step: int, partial: dict[str, float] | None = None) -> None:
        """SIGINT/SIGTERM: save the state after ``step`` steps of ``epoch`` (``step`` 0: ``epoch`` epochs
        are done and saved already), say how to resume, and raise the signal's exception."""
        if step:
            self.guard.flush()
            self.elapsed += time.perf_counter() - self._epoch_start
            state = self.state(epoch, step, partial)  # a collective under torchrun
            if self.info.is_main:
                save_checkpoint(state, self.run_dir / CHECKPOINT)
        where = f"epoch {epoch + 1} step {step}" if step else f"the end of epoch {epoch}"
        stop_after_saving("search", self.stop.signum or 0, where, self.run_dir, self.info.is_main)

    def _say(self, line: str) -> None:
        """A progress line, printed by rank 0 only."""
        if self.info.is_main:
            tqdm.write(line)

    def provenance(self) -> dict[str, Any]:
        from pflnas import __version__

        return {
            "strategy": self.cfg.strategy.name,
            "seed": self.cfg.run.seed,
            "dataset": self.cfg.data.dataset,
            "data_source": self.loaders.source,
            "epochs": self.cfg.run.epochs,
            "device": str(self.device)
            if self.device.type == "cpu"
            else torch.cuda.get_device_name(self.device),
            "wall_time_s": round(self.elapsed, 3),
            "world_size": self.info.world_size,  # processes (torchrun); data.batch_size is the global batch
            "pflnas_version": __version__,
            "git_commit": git_commit(),
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "config": to_dict(self.cfg),
        }
