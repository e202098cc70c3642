"""Retraining a found architecture (torchvision-reference skeleton: ``train_one_epoch`` / ``evaluate`` /
``RetrainRun.run``). Single process or ``torchrun`` DDP; timm supplies the optimizer, scheduler, EMA, mixup
and losses. Only rank 0 writes; every file is written atomically."""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pflnas.arch.record import Architecture
from pflnas.config.loader import to_dict
from pflnas.data.retrain import retrain_loaders
from pflnas.device import (
    build_within_memory,
    rng_state,
    seed_everything,
    set_determinism,
    set_rng_state,
)
from pflnas.errors import ConfigError, DataError, PflnasError
from pflnas.models import AuxOutput, build_from_config
from pflnas.rundir import hold
from pflnas.train.checkpoint import load_checkpoint, remove_stale_temp_files, save_checkpoint
from pflnas.train.distributed import DistInfo, all_reduce_sum, gather_object
from pflnas.train.guard import FiniteGuard, total_norm
from pflnas.train.layout import BEST, CONFIG, LAST, METRICS, RESULT
from pflnas.train.metrics import MetricsLog
from pflnas.train.progress import Say, quiet, startup_lines
from pflnas.train.recipe import RetrainConfig
from pflnas.train.retrain_eval import Sums, evaluate
from pflnas.train.retrain_setup import amp_dtype, network_config, scaled_lr, split_batch
from pflnas.train.signals import StopSignals, stop_after_saving
from pflnas.utils_io import atomic_write_json, atomic_write_text


class RetrainRun:
    """One retraining in one run directory."""

    def __init__(self, cfg: RetrainConfig, arch: Architecture, run_dir: str | Path, info: DistInfo):
        self.cfg, self.arch, self.info = cfg, arch, info
        self.run_dir = Path(run_dir)
        self.device = info.device
        self.dtype = amp_dtype(cfg, self.device)

    # --- setup -------------------------------------------------------------------------------------
    def setup(self, say: Say = quiet) -> None:
        """Everything before the first step; ``say`` announces the slow parts (data, network)."""
        cfg, info = self.cfg, self.info
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        seed_everything(cfg.run.seed)  # the same on every rank: identical init, identical augmentation RNG
        set_determinism(self.device, cfg.run.deterministic)
        self._load_data(say)
        model = self._build_network(say)
        self.model_without_ddp = model
        self._build_training(model)
        if info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        self.model = torch.compile(model) if cfg.run.compile else model
        self.metrics = MetricsLog(self.run_dir / METRICS)
        self.epoch, self.step_in_epoch, self.updates, self.best, self.elapsed = 0, 0, 0, -1.0, 0.0
        self.partial: dict[str, float] | None = None  # the epoch's running sums of a mid-epoch checkpoint
        reduce = (lambda t: all_reduce_sum(t, info)) if info.distributed else None
        self.stop = StopSignals()  # replaced by the one run() enters
        self.guard = FiniteGuard(
            cfg.run.nonfinite, cfg.run.nonfinite_max_skips, self.device, kept=self._kept, reduce=reduce
        )
        self._named = list(self.model_without_ddp.named_parameters())

    def _load_data(self, say: Say) -> None:
        cfg, info, d = self.cfg, self.info, self.cfg.data
        say(f"loading {d.dataset} (the first load decodes the images and caches them)")
        self.data = retrain_loaders(
            d.dataset,
            d.data_dir,
            batch_size=split_batch(cfg, info),
            eval_batch_size=d.eval_batch_size,
            device=self.device,
            seed=cfg.run.seed,
            rank=info.rank,
            world_size=info.world_size,
            subset=d.subset,
            cutout=d.cutout,
            channels_last=cfg.run.channels_last,
            image_size=d.image_size,
            workers=d.workers,
            randaugment=d.randaugment,
            reprob=d.reprob,
        )
        if len(self.data.train) == 0:  # it would train nothing and "succeed"
            raise DataError(
                f"the training data gives no full batch of data.batch_size={cfg.data.batch_size}"
                f"{' across the processes' if info.distributed else ''}; lower data.batch_size or use more "
                "data (data.subset)"
            )

    def _build_network(self, say: Say) -> nn.Module:
        cfg, info = self.cfg, self.info
        self.net_cfg = network_config(cfg, self.arch, self.data)
        say(f"building the network of {self.arch.space.name} on {self.device}")
        model = build_within_memory(
            lambda: build_from_config(self.arch, self.net_cfg),
            self.device,
            "the network",
            "lower model.init_channels / model.layers (or a block space's skeleton widths)",
            copies=3,  # weights, gradients, optimizer state
        )
        if cfg.run.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.run.sync_bn and self.device.type != "cuda":
            raise ConfigError("run.sync_bn needs CUDA (torch's SyncBatchNorm is GPU-only); on CPU drop it")
        if cfg.run.sync_bn and info.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def _build_training(self, model: nn.Module) -> None:
        """Optimizer, schedule, EMA, loss scaling, mixup and the criterion (timm's, from the config)."""
        cfg, d = self.cfg, self.cfg.data
        self.optimizer = create_optimizer_v2(
            model,
            opt=cfg.optim.name,
            lr=scaled_lr(cfg),
            weight_decay=cfg.optim.weight_decay,
            momentum=cfg.optim.momentum,
            filter_bias_and_bn=cfg.optim.no_decay_bn_bias,
        )
        s = cfg.schedule
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer,
            sched="cosine" if s.name == "cosine" else "step",
            num_epochs=s.epochs,
            decay_epochs=s.decay_epochs,
            decay_rate=s.decay_rate,
            min_lr=s.min_lr,
            warmup_lr=s.warmup_lr,
            warmup_epochs=s.warmup_epochs,
        )
        self.ema = ModelEmaV3(model, decay=cfg.run.ema_decay) if cfg.run.ema else None
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype is torch.float16 else None
        mixing = d.mixup > 0 or d.cutmix > 0
        self.mixup = (
            Mixup(
                mixup_alpha=d.mixup,
                cutmix_alpha=d.cutmix,
                label_smoothing=d.label_smoothing,
                num_classes=self.data.num_classes,
            )
            if mixing
            else None
        )
        self.criterion: nn.Module = (
            SoftTargetCrossEntropy() if mixing else nn.CrossEntropyLoss(label_smoothing=d.label_smoothing)
        )

    # --- checkpoints -------------------------------------------------------------------------------
    def _state(self, partials: list[Any] | None = None) -> dict[str, Any]:
        return {
            "format": "pflnas-retrain-checkpoint-1",
            "epoch": self.epoch,
            "step": self.step_in_epoch,
            "partial": partials,  # mid-epoch: every rank's running sums of the epoch so far
            "nonfinite_skipped": self.guard.skipped,
            "updates": self.updates,
            "model": self.model_without_ddp.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng_state(),
            "config": to_dict(self.cfg),
            "network": self.net_cfg.to_dict(),
            "arch": self.arch.to_dict(),
            "best_top1": self.best,
            "elapsed": self.elapsed,
        }

    def _save(self, name: str, partial: dict[str, float] | None = None) -> None:
        """Rank 0 writes; every rank calls it (the running sums of a mid-epoch checkpoint are gathered)."""
        self.guard.flush()  # never a checkpoint after a non-finite step
        partials = gather_object(partial, self.info) if partial is not None else None
        if self.info.is_main:
            save_checkpoint(self._state(partials), self.run_dir / name)

    def restore(self) -> None:
        state = load_checkpoint(self.run_dir / LAST, self.device)
        if state.get("arch") != self.arch.to_dict() or state.get("network") != self.net_cfg.to_dict():
            raise PflnasError(
                f"{self.run_dir / LAST} was written for another architecture or network; start anew"
            )
        self.model_without_ddp.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch, self.step_in_epoch, self.updates = state["epoch"], state["step"], state["updates"]
        self.best, self.elapsed = state["best_top1"], state["elapsed"]
        self.guard.skipped = int(state.get("nonfinite_skipped", 0))
        partials = state.get("partial")
        if self.step_in_epoch and partials is not None:
            if len(partials) != self.info.world_size:
                raise PflnasError(
                    f"{self.run_dir / LAST} was saved inside an epoch by {len(partials)} process(es); "
                    f"resume it with as many (torchrun --nproc-per-node {len(partials)})"
                )
            self.partial = partials[self.info.rank]
        if self.info.is_main:
            self.metrics.truncate_to(self.epoch)
            remove_stale_temp_files(self.run_dir)  # a kill inside an atomic write leaves its temp file

    # --- training ----------------------------------------------------------------------------------
    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _loss(self, out: Tensor | AuxOutput, target: Tensor) -> tuple[Tensor, Tensor]:
        if isinstance(out, AuxOutput):
            logits = out.logits.float()
            loss = self.criterion(logits, target) + self.cfg.model.auxiliary_weight * self.criterion(
                out.aux_logits.float(), target
            )
            return loss, logits
        logits = out.float()
        return self.criterion(logits, target), logits

    def train_one_epoch(self) -> dict[str, float]:
        cfg, info, model = self.cfg, self.info, self.model
        loader = self.data.train
        loader.set_epoch(self.epoch)
        model.train()
        if hasattr(self.model_without_ddp, "drop_path_prob"):  # DARTS: linear drop-path schedule
            self.model_without_ddp.drop_path_prob = cfg.model.drop_path * self.epoch / cfg.schedule.epochs
        accum = cfg.run.accumulation
        partial, self.partial = self.partial or {}, None
        sums, window = Sums.zeros(self.device, partial), Sums.zeros(self.device)
        skipped = int(partial.get("skipped", 0))
        start_step, seen, t0 = self.step_in_epoch, 0, time.perf_counter()
        bar = tqdm(
            total=len(loader),
            initial=start_step,
            desc=f"epoch {self.epoch + 1}/{cfg.schedule.epochs}",
            leave=False,
            disable=not (cfg.run.progress and info.is_main) or None,
            dynamic_ncols=True,
        )
        for step, (x, y) in enumerate(loader):
            if step < start_step:  # resuming inside an epoch: the data order is a function of the epoch
                continue
            target = y
            if self.mixup is not None:
                x, target = self.mixup(x, y)
            sync = (step + 1) % accum == 0 or step + 1 == len(loader)
            no_sync = model.no_sync() if info.distributed and not sync else contextlib.nullcontext()
            self.guard.at(self.epoch, step)
            with no_sync:
                with self._autocast():
                    out = model(x)
                loss, logits = self._loss(out, target)
                self.guard.watch("the training loss", loss)
                scaled = loss / accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            window.add(loss, logits.detach(), y)  # counted once its optimizer step is applied
            seen += y.shape[0]
            bar.update(1)
            if not sync:
                continue
            if self._optimizer_step():
                sums.absorb(window)
            else:  # run.nonfinite=skip: the step was dropped, and so are its sums
                window = Sums.zeros(self.device)
                skipped += 1
            stop = self.stop.requested(self.updates + skipped)
            if stop or (cfg.run.checkpoint_every and self.updates % cfg.run.checkpoint_every == 0):
                self.step_in_epoch = step + 1
                self._save(LAST, {**sums.to_dict(), "skipped": skipped})
            if stop:
                bar.close()
                self._stopped(f"epoch {self.epoch + 1} step {step + 1}")
            if step % 20 == 0:
                bar.set_postfix(
                    loss=f"{sums.loss.item() / max(sums.count.item(), 1):.3f}",
                    img_s=f"{seen * info.world_size / (time.perf_counter() - t0):.0f}",
                )
        bar.close()
        self.guard.flush()  # nothing non-finite goes into the epoch's record
        elapsed = time.perf_counter() - t0
        out = sums.reduce(info)
        out["images_per_s"] = seen * info.world_size / max(elapsed, 1e-9)
        out["time"] = elapsed
        out["skipped"] = skipped
        return out

    def _optimizer_step(self) -> bool:
        """Clip and step; False when the guard dropped the step (run.nonfinite=skip)."""
        clip = self.cfg.optim.grad_clip
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for _, p in self._named]
        guard = self.guard
        check = self.scaler is None  # fp16: inf gradients are the scaler's business (it skips, rescales)
        if check and guard.eager:  # before clipping, which would spread one NaN over every gradient
            guard.watch_each(
                "the gradients", ((f"grad of {n}", p.grad) for n, p in self._named if p.grad is not None)
            )
        norm = nn.utils.clip_grad_norm_(params, clip) if clip else None
        if check and not guard.eager:  # clipping's norm when it clips (no extra pass), else one norm
            total = norm if norm is not None else total_norm(p.grad for p in params if p.grad is not None)
            guard.watch("the gradients", total)
        if not guard.ok():
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()  # closes the unscale_ above; the scale stays
            return False
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.updates += 1
        if self.ema is not None:
            self.ema.update(self.model_without_ddp, step=self.updates)
        self.guard.step_done()
        return True

    def _kept(self) -> str:
        path = self.run_dir / LAST
        if not path.is_file():
            return "no checkpoint was written yet"
        return f"{path} is left as it was (the last good state; --resume {self.run_dir} continues from it)"

    def _stopped(self, where: str) -> None:
        """SIGINT/SIGTERM, the checkpoint saved: say how to resume and raise the signal's exception."""
        stop_after_saving("retrain", self.stop.signum or 0, where, self.run_dir, self.info.is_main)

    def run(self, resume: bool = False) -> dict[str, Any]:
        """Train (or continue) and write result.json; rank 0 holds the run directory's lock throughout,
        so no second process writes into it (:mod:`pflnas.rundir`)."""
        if not self.info.is_main:  # under torchrun only rank 0 writes
            return self._train(resume)
        with hold(self.run_dir, "retrain"):
            return self._train(resume)

    def _train(self, resume: bool) -> dict[str, Any]:
        with startup_lines(self.cfg.run.progress and self.info.is_main) as say:  # on stderr, before the bars
            self.setup(say)
        if resume and os.path.lexists(self.run_dir / LAST):  # a loop or broken link is named when loaded
            self.restore()
        elif self.info.is_main:
            for stale in (RESULT, BEST):  # a replaced run's results never outlive it
                (self.run_dir / stale).unlink(missing_ok=True)
            # arch.json first: config.yaml marks a run directory --resume accepts, so it must come last
            atomic_write_json(self.run_dir / "arch.json", self.arch.to_dict())
            atomic_write_text(
                self.run_dir / CONFIG,
                yaml.safe_dump({**to_dict(self.cfg), "network": self.net_cfg.to_dict()}, sort_keys=False),
            )
            self.metrics.truncate_to(0)
        writer = self._tensorboard()
        total = self.cfg.schedule.epochs
        reduce = (lambda t: all_reduce_sum(t, self.info)) if self.info.distributed else None
        with StopSignals(reduce, self.device) as self.stop:
            self._epochs(writer, total)
        result = self._result()
        if self.info.is_main:
            atomic_write_json(self.run_dir / RESULT, result)
        if writer is not None:
            writer.close()
        return result

    def _epochs(self, writer: Any, total: int) -> None:
        while self.epoch < total:
            lr = self.optimizer.param_groups[0]["lr"]
            train = self.train_one_epoch()
            evaluated = evaluate(self.model, self.data.eval, self.info, self.dtype)
            record = {
                "epoch": self.epoch,
                "lr": lr,
                "train_loss": train["loss"],
                "train_top1": train["top1"],
                "eval_loss": evaluated["loss"],
                "top1": evaluated["top1"],
                "top5": evaluated["top5"],
                "images_per_s": train["images_per_s"],
                "epoch_time": train["time"],
                **({"skipped_batches": train["skipped"]} if self.cfg.run.nonfinite == "skip" else {}),
            }
            if self.ema is not None:
                ema_eval = evaluate(self.ema.module, self.data.eval, self.info, self.dtype)
                record.update(ema_top1=ema_eval["top1"], ema_top5=ema_eval["top5"])
            self.elapsed += train["time"]
            self.epoch += 1
            self.step_in_epoch = 0
            self.scheduler.step(self.epoch)
            improved = record["top1"] > self.best
            self.best = max(self.best, record["top1"])
            if self.info.is_main:
                self.metrics.append(record)
                self._log(writer, record)
                tqdm.write(
                    f"epoch {self.epoch}/{total}  train loss {record['train_loss']:.3f}  "
                    f"top1 {record['top1']:.4f} top5 {record['top5']:.4f}  "
                    f"{record['images_per_s']:.0f} img/s"
                )
            if improved:  # best.pt first: a kill between the two leaves last.pt behind, which redoes both
                self._save(BEST)
            self._save(LAST)
            if self.stop.requested(force=True):  # a signal during the evaluation: saved just now
                self._stopped(f"the end of epoch {self.epoch}")

    def _result(self) -> dict[str, Any]:
        rows = self.metrics.read() if self.info.is_main else []
        last = rows[-1] if rows else {}
        return {
            "top1": last.get("top1"),
            "top5": last.get("top5"),
            "best_top1": self.best,
            "epochs": self.epoch,
            "wall_time_s": round(self.elapsed, 3),
            "world_size": self.info.world_size,
            "network": self.net_cfg.to_dict(),
            "params": sum(
                p.numel() for n, p in self.model_without_ddp.named_parameters() if "auxiliary" not in n
            ),
        }

    def _tensorboard(self) -> Any:
        if not (self.info.is_main and self.cfg.run.tensorboard):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency; tolerate minimal installs
            return None
        return SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=self.epoch)

    @staticmethod
    def _log(writer: Any, record: dict[str, Any]) -> None:
        if writer is None:
            return
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                writer.add_scalar(key, value, record["epoch"])
        writer.flush()
