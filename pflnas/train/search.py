"""The supernet search loop (DARTS protocol): alternate an architecture step on a held-out batch and a
weight step on a training batch; log every epoch; checkpoint atomically; write found.json at the end."""

from __future__ import annotations

import contextlib
import dataclasses
import math
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

from pflnas.arch.collapse import collapse_diagnostics, thresholds_from
from pflnas.arch.record import Architecture, save_architecture
from pflnas.configs import SearchConfig, to_dict
from pflnas.data import BatchLoader, load_dataset, search_split
from pflnas.errors import PflnasError
from pflnas.spaces.config import SpaceConfig, load_space
from pflnas.strategies import StepContext, Strategy, create_strategy
from pflnas.supernet import Supernet, build_supernet
from pflnas.supernet.network import check_supernet_options
from pflnas.train.checkpoint import load_checkpoint, save_checkpoint
from pflnas.train.device import resolve_device, rng_state, seed_everything, set_determinism, set_rng_state
from pflnas.train.metrics import MetricsLog
from pflnas.utils_io import atomic_write_text

CHECKPOINT = "checkpoint.pt"
FOUND = "found.json"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"


def resolve_space(cfg: SearchConfig) -> SpaceConfig:
    space = load_space(cfg.space.name)
    overrides = {k: v for k, v in dataclasses.asdict(cfg.space).items() if k != "name" and v is not None}
    return space.replace(**overrides) if overrides else space


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


def _make_loaders(cfg: SearchConfig, device: torch.device) -> _Loaders:
    d = cfg.data
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
            d.batch_size,
            augment=True,
            shuffle=True,
            drop_last=True,
            seed=seed * 2 + 1,
            **common,
        ),
        arch=BatchLoader(
            images,
            labels,
            arch_idx,
            d.batch_size,
            augment=True,
            shuffle=True,
            drop_last=True,
            seed=seed * 2 + 2,
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
            **common,
        ),
        num_classes=len(data.classes),
        in_channels=int(data.train_x.shape[1]),
        image_size=int(data.train_x.shape[-1]),
        source=data.source,
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
def evaluate(model: nn.Module, loader: BatchLoader, autocast: Any) -> tuple[float, float]:
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
    return (loss_sum / max(count, 1)).item(), (correct / max(count, 1)).item()


def _entropy(probs: dict[str, dict[str, float]]) -> float:
    ents = [-sum(p * math.log(p) for p in dist.values() if p > 0) for dist in probs.values()]
    return sum(ents) / len(ents)


class SearchRun:
    """One search in one run directory. ``run()`` returns the found architecture."""

    def __init__(self, cfg: SearchConfig, run_dir: str | Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.space = resolve_space(cfg)
        self.device = resolve_device(cfg.run.device)

    # --- setup -------------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        seed_everything(cfg.run.seed)
        set_determinism(self.device, cfg.run.deterministic)
        self.strategy: Strategy = create_strategy(cfg.strategy.name, cfg.arch)
        check_supernet_options(self.space, **self.strategy.supernet_options())  # before the data loads
        self.loaders = _make_loaders(cfg, self.device)
        model: Supernet = build_supernet(
            self.space,
            self.loaders.num_classes,
            self.loaders.in_channels,
            cfg.run.share_param_free,
            image_size=self.loaders.image_size,
            **self.strategy.supernet_options(),
        ).to(self.device)
        if cfg.run.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
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
        self.metrics = MetricsLog(self.run_dir / METRICS)
        self.start_epoch = 0
        self.elapsed = 0.0

    def _autocast(self):
        if not self.cfg.run.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        with self._autocast():
            logits = self.model(x)
        return F.cross_entropy(logits.float(), y)

    # --- checkpoints -------------------------------------------------------------------------------
    def _state(self, epochs_done: int) -> dict[str, Any]:
        return {
            "format": "pflnas-search-checkpoint-1",
            "epoch": epochs_done,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "strategy": self.strategy.state_dict(),
            "rng": rng_state(),
            "config": to_dict(self.cfg),
            "space": self.space.to_dict(),
            "elapsed": self.elapsed,
        }

    def _restore(self) -> None:
        state = load_checkpoint(self.run_dir / CHECKPOINT, self.device)
        if state.get("space") != self.space.to_dict():
            raise PflnasError(f"checkpoint in {self.run_dir} is for another search space; start a new run")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.strategy.load_state_dict(state["strategy"])
        set_rng_state(state["rng"])
        self.start_epoch = int(state["epoch"])
        self.elapsed = float(state["elapsed"])
        self.metrics.truncate_to(self.start_epoch)

    # --- the loop ----------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> Architecture:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._setup()
        if resume and (self.run_dir / CHECKPOINT).exists():
            self._restore()
        else:
            atomic_write_text(
                self.run_dir / CONFIG,
                yaml.safe_dump(
                    {**to_dict(self.cfg), "resolved_space": self.space.to_dict()}, sort_keys=False
                ),
            )
            self.metrics.truncate_to(0)
        for epoch in range(self.start_epoch, self.cfg.run.epochs):
            t0 = time.perf_counter()
            record = self._train_epoch(epoch)
            self.scheduler.step()
            self.elapsed += time.perf_counter() - t0
            record["epoch_time"] = round(time.perf_counter() - t0, 3)
            self.metrics.append(record)
            save_checkpoint(self._state(epoch + 1), self.run_dir / CHECKPOINT)
        arch = self.strategy.export(self._provenance())
        save_architecture(arch, self.run_dir / FOUND)
        return arch

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, loaders, model = self.cfg, self.loaders, self.model
        for loader in (loaders.train, loaders.arch):
            loader.set_epoch(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        ctx = StepContext(
            loss=self._loss,
            virtual_step=_virtual_step(self.optimizer),
            lr=lr,
            epoch=epoch,
            epochs=cfg.run.epochs,
        )
        steps = min(len(loaders.train), len(loaders.arch))
        sums = {
            k: torch.zeros((), dtype=torch.float64, device=self.device) for k in ("loss", "correct", "arch")
        }
        seen = 0
        model.train()
        bar = tqdm(
            total=steps,
            desc=f"epoch {epoch + 1}/{cfg.run.epochs}",
            leave=False,
            disable=not cfg.run.progress or None,
            dynamic_ncols=True,
        )
        search_arch = epoch >= self.warmup  # weights-only warm-up epochs first (e.g. PC-DARTS)
        for step, (train_batch, arch_batch) in enumerate(zip(loaders.train, loaders.arch)):
            logs = self.strategy.arch_step(train_batch, arch_batch, ctx) if search_arch else {}
            x, y = train_batch
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            loss.backward()
            nn.utils.clip_grad_norm_(self.weights, cfg.weights.grad_clip)
            self.optimizer.step()
            for a in model.arch_parameters():  # the weight step must not leave gradients on alphas
                a.grad = None
            sums["loss"] += loss.detach() * len(y)
            sums["correct"] += (logits.detach().argmax(1) == y).sum()
            if "arch_loss" in logs:
                sums["arch"] += logs["arch_loss"].double() * len(y)
            seen += len(y)
            bar.update(1)
            if step % 10 == 0 or step == steps - 1:  # a host sync only every few steps
                bar.set_postfix(
                    loss=f"{sums['loss'].item() / seen:.3f}",
                    acc=f"{sums['correct'].item() / seen:.3f}",
                    arch=f"{sums['arch'].item() / seen:.3f}" if search_arch else "warm-up",
                )
        bar.close()
        val_loss, val_acc = evaluate(model, loaders.evaluate, self._autocast)
        probs = self.strategy.probabilities()
        current = self.strategy.export()
        share = current.param_free_share()
        diagnostics = collapse_diagnostics(probs, current, thresholds_from(cfg.collapse))
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
            "mean_entropy": _entropy(probs),
            "op_counts": current.op_counts(),
            **diagnostics,
            "probs": probs,
        }
        mass = diagnostics["param_free_mass"]
        collapse = diagnostics["collapse"]
        tqdm.write(
            f"epoch {epoch + 1}/{cfg.run.epochs}  "
            f"train loss {record['train_loss']:.3f} acc {record['train_acc']:.3f}"
            f"  val loss {val_loss:.3f} acc {val_acc:.3f}  param-free share {share:.2f}"
            f" mass {mass if mass is not None else float('nan'):.2f}"
            f"  skips {diagnostics['skip_count']}  entropy {record['mean_entropy']:.2f}"
            + (f"  COLLAPSE? {'; '.join(collapse['reasons'])}" if collapse["flagged"] else "")
        )
        return record

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
            "pflnas_version": __version__,
            "git_commit": _git_commit(),
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "config": to_dict(self.cfg),
        }
