"""The supernet search loop (DARTS protocol): alternate an architecture step on a held-out batch and a
weight step on a training batch; log every epoch; checkpoint atomically; write found.json at the end."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from tqdm import tqdm

from pflnas.arch.chance import chance_share
from pflnas.arch.collapse import collapse_diagnostics, thresholds_from
from pflnas.arch.record import Architecture, save_architecture
from pflnas.config.loader import to_dict
from pflnas.config.search import SearchConfig
from pflnas.data import BatchLoader, load_dataset, search_split
from pflnas.errors import ConfigError, DataError, PflnasError
from pflnas.latency.objective import LatencyTerm
from pflnas.measure.context import SpeedConfig
from pflnas.measure.latency_table import LatencyTable, cached_table, load_table
from pflnas.rundir import hold
from pflnas.spaces import resolve_space
from pflnas.strategies import StepContext, Strategy, create_strategy
from pflnas.supernet import Supernet, build_supernet
from pflnas.supernet.network import check_supernet_options
from pflnas.train.checkpoint import remove_stale_temp_files, save_checkpoint
from pflnas.train.device import (
    build_within_memory,
    resolve_device,
    rng_state,
    seed_everything,
    set_determinism,
    set_rng_state,
)
from pflnas.train.dist_search import AlphaDump, SearchSync, check_global_batch
from pflnas.train.distributed import DistInfo
from pflnas.train.graph_step import GraphedStep
from pflnas.train.guard import FiniteGuard, SkipBatch, total_norm
from pflnas.train.layout import (  # the run's files, the resolved space: no torch there
    CHECKPOINT,
    CONFIG,
    EVOLUTION,
    FOUND,
    LATENCY_TABLE,
    METRICS,
)
from pflnas.train.metrics import MetricsLog
from pflnas.train.progress import Say, quiet, startup_lines
from pflnas.train.search_step import SearchStep
from pflnas.train.signals import StopSignals, stop_after_saving
from pflnas.train.subnet_eval import SubnetEvaluator
from pflnas.utils_io import atomic_write_json, atomic_write_text


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


@dataclasses.dataclass
class _Loaders:
    train: BatchLoader
    arch: BatchLoader
    evaluate: BatchLoader
    num_classes: int
    in_channels: int
    image_size: int
    source: str


def _make_loaders(cfg: SearchConfig, device: torch.device, info: DistInfo | None = None) -> _Loaders:
    """The search's loaders; under torchrun each rank takes its slice of the same global batches (the
    per-rank batch is ``data.batch_size / world_size``) and its disjoint slice of the held-out split."""
    d = cfg.data
    rank, world = (info.rank, info.world_size) if info is not None else (0, 1)
    batch_size = d.batch_size // world  # divisible: checked by check_global_batch
    data = load_dataset(d.dataset, d.data_dir)
    train_idx, arch_idx = search_split(len(data.train_y), d.train_portion, d.subset, cfg.run.seed)
    eval_idx = arch_idx if d.eval_limit is None else arch_idx[: d.eval_limit]
    common = dict(mean=data.mean, std=data.std, device=device, channels_last=cfg.run.channels_last)
    seed = cfg.run.seed
    # On a GPU the whole uint8 training set (184 MB for CIFAR-10) lives on the device: batches are gathered
    # and augmented there, with no per-step host-to-device copy.
    images, labels = data.train_x, data.train_y
    if device.type == "cuda":
        images, labels = images.to(device), labels.to(device)
    return _Loaders(
        train=BatchLoader(
            images,
            labels,
            train_idx,
            batch_size,
            augment=True,
            shuffle=True,
            drop_last=True,
            seed=seed * 2 + 1,
            rank=rank,
            world_size=world,
            **common,
        ),
        arch=BatchLoader(
            images,
            labels,
            arch_idx,
            batch_size,
            augment=True,
            shuffle=True,
            drop_last=True,
            seed=seed * 2 + 2,
            rank=rank,
            world_size=world,
            **common,
        ),
        evaluate=BatchLoader(
            images,
            labels,
            eval_idx,
            d.eval_batch_size,
            augment=False,
            shuffle=False,
            drop_last=False,
            seed=seed,
            rank=rank,
            world_size=world,
            even_shards=False,  # every held-out image once; the sums are all-reduced
            **common,
        ),
        num_classes=len(data.classes),
        in_channels=int(data.train_x.shape[1]),
        image_size=int(data.train_x.shape[-1]),
        source=data.source,
    )


def _check_batches(cfg: SearchConfig, loaders: _Loaders) -> None:
    """A search whose weight or architecture half gives no full batch would train nothing and "succeed"."""
    halves = {"weight": loaders.train, "architecture": loaders.arch}
    for name, loader in halves.items():
        if len(loader) == 0:
            raise DataError(
                f"the {name} half of the search data ({len(loader.indices)} images) gives no full "
                f"batch of data.batch_size={cfg.data.batch_size}; lower data.batch_size or use more data "
                "(data.subset, data.train_portion)"
            )


def _virtual_step(optimizer: torch.optim.SGD):
    """The update SGD (momentum, weight decay) would subtract for ``grads``, without changing its state."""

    def step(params: Sequence[Tensor], grads: Sequence[Tensor]) -> list[Tensor]:
        group = optimizer.param_groups[0]
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        out = []
        for p, g in zip(params, grads):
            d = g + wd * p.detach()
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                d = d + momentum * buf
            out.append(lr * d)
        return out

    return step


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: BatchLoader, autocast: Any, sync: SearchSync | None = None
) -> tuple[float, float]:
    """Mean loss and accuracy; with ``sync``, over the shards of every rank (sums all-reduced)."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=next(model.parameters()).device)
    correct = torch.zeros_like(loss_sum)
    count = 0
    for x, y in loader:
        with autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        count += len(y)
    model.train()
    if sync is not None and sync.distributed:
        totals = sync.sum_(torch.stack([loss_sum, correct, loss_sum.new_tensor(count)]))
        loss_sum, correct, count = totals[0], totals[1], int(totals[2].item())
    return (loss_sum / max(count, 1)).item(), (correct / max(count, 1)).item()


def _entropy(probs: dict[str, dict[str, float]]) -> float:
    ents = [-sum(p * math.log(p) for p in dist.values() if p > 0) for dist in probs.values()]
    return sum(ents) / len(ents)


class SearchRun:
    """One search in one run directory. ``run()`` returns the found architecture."""

    def __init__(self, cfg: SearchConfig, run_dir: str | Path, info: DistInfo | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.space = resolve_space(cfg.space)
        # torchrun: ``info`` from init_distributed (pflnas.train.dist_search says how ranks stay in step)
        self.info = info or DistInfo(0, 1, 0, resolve_device(cfg.run.device))
        self.device = self.info.device
        self.sync = SearchSync(self.info)
        self.alpha_dump = AlphaDump(self.info.rank)  # PFLNAS_DEBUG_ALPHA_DIR: alphas after every step

    # --- setup -------------------------------------------------------------------------------------
    def _setup(self, say: Say = quiet) -> None:
        """Everything before the first step; ``say`` announces the slow parts (data, supernet)."""
        cfg = self.cfg
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        seed_everything(cfg.run.seed)
        set_determinism(self.device, cfg.run.deterministic)
        self.strategy: Strategy = create_strategy(cfg.strategy.name, cfg.arch)
        check_supernet_options(self.space, **self.strategy.supernet_options())  # before the data loads
        if cfg.run.compile and self.strategy.dynamic_path:
            raise ConfigError(
                f"run.compile does not suit {self.strategy.name!r}: its forward changes path every step, so "
                "torch.compile would recompile again and again; drop run.compile"
            )
        self._check_cuda_graph()
        check_global_batch(cfg.data.batch_size, self.info)
        say(f"loading {cfg.data.dataset} (the first load decodes the images and caches them)")
        self.loaders = _make_loaders(cfg, self.device, self.info)
        _check_batches(cfg, self.loaders)
        say(f"building the {self.space.name} supernet for {cfg.strategy.name} on {self.device}")
        model: Supernet = build_within_memory(  # type: ignore[assignment]
            lambda: build_supernet(
                self.space,
                self.loaders.num_classes,
                self.loaders.in_channels,
                cfg.run.share_param_free,
                image_size=self.loaders.image_size,
                **self.strategy.supernet_options(),
            ),
            self.device,
            "the supernet",
            "lower space.init_channels / space.layers (block spaces: the skeleton's widths)",
            copies=3,  # weights, gradients, momentum
        )
        if cfg.run.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        # the compiled forward serves the loss closures; the strategy keeps the plain module
        self.forward = torch.compile(model) if cfg.run.compile else model
        self.strategy.attach(model)
        given = cfg.strategy.warmup_epochs
        self.warmup = self.strategy.default_warmup_epochs(cfg.run.epochs) if given is None else given
        w = cfg.weights
        self.weights = model.weight_parameters()
        self.optimizer = torch.optim.SGD(
            self.weights, lr=w.lr, momentum=w.momentum, weight_decay=w.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=cfg.run.epochs, eta_min=w.lr_min
        )
        self.step_body = SearchStep(
            model,
            self.strategy,
            self.optimizer,
            self.weights,
            cfg.weights.grad_clip,
            forward=self.forward,
            autocast=self._autocast,
            reduce_grads=self.sync.reduce_grads,  # torchrun: one all-reduce, before clipping
            # NaN/Inf checks before clipping and the optimizer step (a captured graph checks its outputs)
            check=None if cfg.run.cuda_graph else self._check_weight_step,
        )
        self.graphed: GraphedStep | None = None
        if cfg.run.cuda_graph:  # see pflnas.train.graph_step: one launch per step instead of thousands
            optimizers = [self.optimizer, *self.strategy.optimizers()]
            self.graphed = GraphedStep(self.step_body, optimizers, self.device)  # type: ignore[arg-type]
        self.metrics = MetricsLog(self.run_dir / METRICS)
        self.start_epoch = 0
        self.start_step = 0  # a checkpoint saved on SIGINT/SIGTERM may lie inside an epoch
        self.partial: dict[str, float] | None = None  # and then holds that epoch's running sums
        self.elapsed = 0.0
        self._epoch_start = time.perf_counter()
        self.latency: LatencyTerm | None = None  # latency.weight > 0: set by run()
        self.stop = StopSignals()  # replaced by the one run() enters
        self.guard = FiniteGuard(
            cfg.run.nonfinite,
            cfg.run.nonfinite_max_skips,
            self.device,
            kept=self._kept,
            reduce=self.sync.sum_ if self.info.distributed else None,
        )
        arch_ids = {id(p) for p in model.arch_parameters()}
        named = list(model.named_parameters())
        self._named_weights = [(n, p) for n, p in named if id(p) not in arch_ids]
        self._named_alphas = [(n.removeprefix("arch."), p) for n, p in named if id(p) in arch_ids]
        self._arch_loss: Tensor | None = None  # the last loss of the architecture step, for the guard

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
        elif run.compile:
            why = "run.compile is on (pick one: torch.compile or the captured step)"
        elif run.nonfinite == "skip":
            why = "run.nonfinite=skip must decide before each optimizer step, inside the graph"
        if why:
            raise ConfigError(f"run.cuda_graph cannot be used: {why}; drop run.cuda_graph")

    def _autocast(self):
        if not self.cfg.run.amp:
            return contextlib.nullcontext()
        # a captured graph must not reuse autocast's cached weight casts (they would be stale on replay)
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, cache_enabled=not self.cfg.run.cuda_graph
        )

    # --- checkpoints -------------------------------------------------------------------------------
    def _state(
        self, epochs_done: int, step: int = 0, partial: dict[str, float] | None = None
    ) -> dict[str, Any]:
        """The checkpoint at the end of epoch ``epochs_done - 1``, or (``step`` > 0: on SIGINT/SIGTERM)
        after ``step`` steps of epoch ``epochs_done``, with that epoch's running sums ``partial``."""
        return {
            "format": "pflnas-search-checkpoint-1",
            "epoch": epochs_done,
            "step": step,
            # every rank's running sums of the epoch so far (a collective: every rank calls _state)
            "partial": self.sync.gather(partial) if step else None,
            # inside an epoch the ranks' BatchNorm statistics differ (they are averaged at its end)
            "buffers_ranks": self.sync.gather(self._buffers()) if step and self.info.distributed else None,
            "nonfinite_skipped": self.guard.skipped,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "strategy": self.strategy.state_dict(),
            "rng": rng_state(),
            "config": to_dict(self.cfg),
            "space": self.space.to_dict(),
            "elapsed": self.elapsed,
            # torchrun: every rank's RNG states (a collective: every rank builds the state)
            **({"rng_ranks": self.sync.gather(rng_state())} if self.info.distributed else {}),
        }

    def _buffers(self) -> dict[str, Tensor]:
        return {name: buf.detach().cpu() for name, buf in self.model.named_buffers()}

    def _restore(self) -> None:
        state = self.sync.load_checkpoint_from_main(self.run_dir / CHECKPOINT, self.device)  # rank 0's file
        if state.get("space") != self.space.to_dict():
            raise PflnasError(f"checkpoint in {self.run_dir} is for another search space; start a new run")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.strategy.load_state_dict(state["strategy"])
        ranks = state.get("rng_ranks")
        same_world = ranks is not None and len(ranks) == self.info.world_size
        set_rng_state(ranks[self.info.rank] if same_world else state["rng"])
        self.start_epoch = int(state["epoch"])
        self.start_step = int(state.get("step", 0))
        if self.start_step:
            partials = state.get("partial") or []
            if len(partials) != self.info.world_size:
                raise PflnasError(
                    f"the checkpoint in {self.run_dir} was saved inside an epoch by {len(partials)} "
                    f"process(es); resume it with as many (torchrun --nproc-per-node {len(partials)})"
                )
            self.partial = partials[self.info.rank]
            if self.info.distributed:
                mine = state["buffers_ranks"][self.info.rank]
                with torch.no_grad():
                    for name, buf in self.model.named_buffers():
                        buf.copy_(mine[name])
        self.guard.skipped = int(state.get("nonfinite_skipped", 0))
        self.elapsed = float(state["elapsed"])
        if self.info.is_main:
            self.metrics.truncate_to(self.start_epoch)
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
            self._setup(say)
        if self.cfg.latency.weight > 0:
            self.latency = self._latency_term(resume)
        # lexists: a symlink loop or broken link there is named when loaded, not taken for no checkpoint
        if resume and self.sync.from_main(lambda: os.path.lexists(self.run_dir / CHECKPOINT)):
            self._restore()
        elif main:
            (self.run_dir / FOUND).unlink(missing_ok=True)  # a replaced run's record never outlives it
            atomic_write_text(
                self.run_dir / CONFIG,
                yaml.safe_dump(
                    {**to_dict(self.cfg), "resolved_space": self.space.to_dict()}, sort_keys=False
                ),
            )
            self.metrics.truncate_to(0)
        self.alpha_dump.step(self.start_epoch, -1, self.model.arch_parameters())  # before the first step
        reduce = self.sync.sum_ if self.info.distributed else None
        with StopSignals(reduce, self.device) as self.stop:  # SIGINT/SIGTERM: save, exit
            self._epochs()
        # a one-shot strategy (SPOS) searches the trained supernet with inherited weights (the loop's data)
        self.loaders.train.set_epoch(self.cfg.run.epochs)  # the same BatchNorm batches after a resume
        with SubnetEvaluator(
            self.model,
            self.loaders.train,
            self.loaders.evaluate,
            self.cfg.spos,
            seed=self.cfg.run.seed,
            autocast=self._autocast,
            progress=self.cfg.run.progress and main,
            sync=self.sync,
        ) as evaluator:
            history = self.strategy.after_training(evaluator)
        if history is not None and main:
            atomic_write_text(self.run_dir / EVOLUTION, "".join(json.dumps(row) + "\n" for row in history))
        arch = self.strategy.export(self.sync.from_main(self._provenance))  # rank 0's record everywhere
        self._save_found(arch)
        return arch

    def _epochs(self) -> None:
        for epoch in range(self.start_epoch, self.cfg.run.epochs):
            t0 = self._epoch_start = time.perf_counter()
            record = self._train_epoch(epoch)
            self.scheduler.step()
            self.elapsed += time.perf_counter() - t0
            record["epoch_time"] = round(time.perf_counter() - t0, 3)
            state = self._state(epoch + 1)  # on every rank (it gathers their RNG states under torchrun)
            if self.info.is_main:
                self.metrics.append(record)
                save_checkpoint(state, self.run_dir / CHECKPOINT)
            if self.stop.requested(force=True):  # a signal during the evaluation: saved just now
                self._stopped(epoch + 1, 0)

    def _save_found(self, arch: Architecture) -> None:
        """Rank 0 writes found.json once every rank has derived the same one (checked under torchrun:
        everything but the provenance, which may hold a rank's own timings; rank 0's is written)."""
        record = arch.to_dict()
        self.alpha_dump.export(json.dumps(record, sort_keys=True))
        derived = {k: v for k, v in record.items() if k != "provenance"}
        self.sync.agree(json.dumps(derived, sort_keys=True), f"the found architecture ({FOUND})")
        if self.info.is_main:
            save_architecture(arch, self.run_dir / FOUND)

    # --- latency-aware search ----------------------------------------------------------------------
    def _latency_term(self, resume: bool) -> LatencyTerm:
        """The latency term over the run's table (rank 0 reads or measures it, every rank uses the same)."""
        if not self.strategy.updates_alphas:
            raise ConfigError(
                f"--latency-weight needs a strategy that trains architecture weights; "
                f"{self.strategy.name!r} does not"
            )
        table = self.sync.from_main(lambda: self._latency_table(resume))
        return LatencyTerm(self.model, table, self.cfg.latency.weight)

    def _latency_table(self, resume: bool) -> LatencyTable:
        """A resumed run rereads its own ``latency_table.json``; a new run takes the cached table of the
        target device (measuring it if needed) and copies it into the run directory."""
        lat, path = self.cfg.latency, self.run_dir / LATENCY_TABLE
        if resume and path.is_file():
            tqdm.write(f"latency table: the run's own {path}")
            return load_table(path)
        speed = SpeedConfig(
            device=lat.device or self.device.type,
            batch_size=lat.batch_size,
            repeats=lat.repeats,
            threads=torch.get_num_threads(),
        )
        source = cached_table(self.space, self.loaders.image_size, speed, lat.cache_dir)
        key = source.table.key
        how = "reused cached" if source.reused else f"measured ({len(source.table.timings)} op runs)"
        tqdm.write(
            f"latency table: {how} {source.path} -- {key['device']} ({key['device_name']}), "
            f"{key['threads']} threads, batch {key['batch_size']}, image {key['image_size']}"
        )
        atomic_write_json(path, source.table.to_dict())
        return source.table

    def _arch_ctx(self, ctx: StepContext, arch_batch: tuple[Tensor, Tensor]) -> StepContext:
        """The architecture step's context: with a latency term, its loss closure adds
        ``weight * E[latency]`` on the held-out batch (see :mod:`pflnas.latency.objective`)."""
        if self.latency is None:
            return ctx
        return dataclasses.replace(ctx, loss=self.latency.wrap(ctx.loss, arch_batch))

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, loaders, model = self.cfg, self.loaders, self.model
        for loader in (loaders.train, loaders.arch):
            loader.set_epoch(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        ctx = StepContext(
            loss=self.step_body.loss if self.graphed else self._recorded_loss,
            virtual_step=_virtual_step(self.optimizer),
            lr=lr,
            epoch=epoch,
            epochs=cfg.run.epochs,
            # torchrun: architecture gradients averaged over ranks; then the NaN/Inf checks (eager steps)
            reduce_grads=self.sync.reduce_grads if self.graphed else self._reduce_arch_grads,
            average=self.sync.average,
        )
        steps = min(len(loaders.train), len(loaders.arch))
        start, partial = self.start_step, self.partial or {}
        self.start_step, self.partial = 0, None
        sums = {
            k: torch.tensor(partial.get(k, 0.0), dtype=torch.float64, device=self.device)
            for k in ("loss", "correct", "arch")
        }
        seen, skipped = int(partial.get("seen", 0)), int(partial.get("skipped", 0))
        model.train()
        bar = tqdm(
            total=steps,
            initial=start,
            desc=f"epoch {epoch + 1}/{cfg.run.epochs}",
            leave=False,
            disable=not (cfg.run.progress and self.info.is_main) or None,
            dynamic_ncols=True,
        )
        search_arch = epoch >= self.warmup  # weights-only warm-up epochs first (e.g. PC-DARTS)

        def step_fn(
            train_batch: tuple[Tensor, Tensor], arch_batch: tuple[Tensor, Tensor]
        ) -> dict[str, Tensor]:
            return self.step_body(train_batch, arch_batch, self._arch_ctx(ctx, arch_batch), search_arch)

        if self.graphed is not None:  # this epoch's LR and schedule: capture the step anew
            self.graphed.set_body(step_fn)
        run_step = step_fn if self.graphed is None else self.graphed
        guard = self.guard
        for step, (train_batch, arch_batch) in enumerate(zip(loaders.train, loaders.arch)):
            if step < start:  # resuming inside the epoch: its batches depend only on (seed, epoch)
                continue
            guard.at(epoch, step)
            try:
                out = run_step(train_batch, arch_batch)
            except SkipBatch:  # run.nonfinite=skip: no optimizer applied this batch
                self.optimizer.zero_grad(set_to_none=True)
                for a in model.arch_parameters():
                    a.grad = None
                skipped += 1
            else:
                self._check_outputs(out, search_arch)
                y = train_batch[1]
                sums["loss"] += out["loss"] * len(y)
                sums["correct"] += out["correct"]
                if "arch_loss" in out:
                    sums["arch"] += out["arch_loss"].double() * len(y)
                seen += len(y)
            guard.step_done()
            if cfg.run.verify_sync:
                self.sync.verify_model(model, f"after epoch {epoch + 1} step {step + 1}")
            self.alpha_dump.step(epoch, step, model.arch_parameters())
            bar.update(1)
            if self.stop.requested(step):
                bar.close()
                partial = {k: v.item() for k, v in sums.items()} | {"seen": seen, "skipped": skipped}
                self._stopped(epoch, step + 1, partial)
            if not bar.disable and (step % 10 == 0 or step == steps - 1):  # host sync: every 10 steps
                bar.set_postfix(
                    loss=f"{sums['loss'].item() / seen:.3f}",
                    acc=f"{sums['correct'].item() / seen:.3f}",
                    arch=f"{sums['arch'].item() / seen:.3f}" if search_arch else "warm-up",
                )
        bar.close()
        guard.flush()  # nothing non-finite goes into a record or a checkpoint
        seen = self.sync.sum_counts(sums, seen)  # torchrun: global sums, for rank 0's record
        self.sync.average_bn_statistics(model)  # every rank evaluates, saves and exports the same model
        self.sync.verify_model(model, f"at the end of epoch {epoch + 1}", buffers=True)
        val_loss, val_acc = evaluate(model, loaders.evaluate, self._autocast, self.sync)
        probs = self.strategy.probabilities()
        current = self.strategy.export()
        share = current.param_free_share()
        diagnostics = collapse_diagnostics(probs, current, thresholds_from(cfg.collapse))
        if not self.strategy.updates_alphas:  # SPOS: untouched alphas are no sign of collapse
            diagnostics["collapse"] = {"flagged": False, "reasons": []}
        record = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": sums["loss"].item() / max(seen, 1),
            "train_acc": sums["correct"].item() / max(seen, 1),
            "arch_loss": sums["arch"].item() / max(seen, 1) if search_arch else None,
            "arch_step": search_arch,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "param_free_share": None if math.isnan(share) else share,
            "param_free_chance": chance_share(current.space, cfg.strategy.name),  # the share's null
            "mean_entropy": _entropy(probs),
            "op_counts": current.op_counts(),
            **diagnostics,
            **({} if self.latency is None else {"expected_latency_ms": self.latency.expected_ms()}),
            **({"skipped_batches": skipped} if cfg.run.nonfinite == "skip" else {}),
            "probs": probs,
        }
        mass = diagnostics["param_free_mass"]
        collapse = diagnostics["collapse"]
        self._say(
            f"epoch {epoch + 1}/{cfg.run.epochs}  "
            f"train loss {record['train_loss']:.3f} acc {record['train_acc']:.3f}"
            f"  val loss {val_loss:.3f} acc {val_acc:.3f}  param-free share {share:.2f}"
            f" (chance {record['param_free_chance']:.2f})"
            f" mass {mass if mass is not None else float('nan'):.2f}"
            f"  skips {diagnostics['skip_count']}  entropy {record['mean_entropy']:.2f}"
            + (f"  E[latency] {record['expected_latency_ms']:.3f} ms" if self.latency is not None else "")
            + (f"  COLLAPSE? {'; '.join(collapse['reasons'])}" if collapse["flagged"] else "")
        )
        return record

    # --- numerical safety (pflnas.train.guard) ------------------------------------------------------
    def _recorded_loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        """The architecture step's loss closure, keeping the last loss for :meth:`_reduce_arch_grads`."""
        self._arch_loss = self.step_body.loss(batch)
        return self._arch_loss

    def _reduce_arch_grads(self, alphas: Sequence[Tensor]) -> None:
        """The strategies' hook right before the architecture optimizer steps: average the gradients over
        ranks, then check the step's loss and gradients (in skip mode a bad batch stops here, unapplied)."""
        self.sync.reduce_grads(alphas)
        guard = self.guard
        guard.watch("the architecture-step loss", self._arch_loss)
        if guard.eager:  # deferred (GPU): non-finite gradients show in the alphas after the step
            named = ((f"grad of alpha {n}", p.grad) for n, p in self._named_alphas if p.grad is not None)
            guard.watch_each("the architecture gradients", named)
        if not guard.ok():
            raise SkipBatch

    def _check_weight_step(self, loss: Tensor) -> None:
        """SearchStep's hook after the weight gradients, before clipping and the optimizer step. Deferred
        (GPU) checks read the norm clipping computes anyway from the step's outputs instead."""
        guard = self.guard
        guard.watch("the training loss", loss)
        if guard.eager:
            named = ((f"grad of {n}", p.grad) for n, p in self._named_weights if p.grad is not None)
            guard.watch_each("the weight gradients", named)
        if not guard.ok():
            raise SkipBatch

    def _check_outputs(self, out: dict[str, Tensor], search_arch: bool) -> None:
        """After a step: the alphas it left (and, for a replayed CUDA graph, whose body has no hooks, the
        step's outputs), as device-side verdicts read when due."""
        guard = self.guard
        if self.graphed is not None:
            guard.watch("the architecture-step loss", out.get("arch_loss"))
            guard.watch("the training loss", out["loss"])
        if not guard.eager:  # clipping's norm: not finite iff some gradient is not
            guard.watch("the weight gradients", out.get("grad_norm"))
        if search_arch and self.strategy.updates_alphas:
            alphas = self._named_alphas
            guard.watch(
                "the architecture weights",
                total_norm(p for _, p in alphas),
                ((f"alpha {n}", p) for n, p in alphas),
                fatal=True,  # already applied: skipping the batch would not undo it
            )
        guard.ok()

    # --- stopping -----------------------------------------------------------------------------------
    def _kept(self) -> str:
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
            state = self._state(epoch, step, partial)  # a collective under torchrun
            if self.info.is_main:
                save_checkpoint(state, self.run_dir / CHECKPOINT)
        where = f"epoch {epoch + 1} step {step}" if step else f"the end of epoch {epoch}"
        stop_after_saving("search", self.stop.signum or 0, where, self.run_dir, self.info.is_main)

    def _say(self, line: str) -> None:
        """A progress line, printed by rank 0 only."""
        if self.info.is_main:
            tqdm.write(line)

    def _provenance(self) -> dict[str, Any]:
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
            "git_commit": _git_commit(),
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "config": to_dict(self.cfg),
        }
