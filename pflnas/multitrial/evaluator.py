"""The short-budget training evaluator of a real multi-trial search.

Each trial trains the sampled architecture briefly as the stand-alone derived network and scores it on the
held-out half of the search split, exactly the data a one-shot search uses, so multi-trial and one-shot
results are comparable. Every trial starts from the same seed, so a retried trial reproduces the one it
replaces (on CPU). Details on :class:`TrainingEvaluator`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pflnas.arch.record import Architecture
from pflnas.config.search import SearchConfig
from pflnas.device import seed_everything
from pflnas.measure.context import SpeedConfig
from pflnas.measure.counting import count_parameters
from pflnas.measure.speed import measure_latency
from pflnas.models import build_from_config, resolve_network_config
from pflnas.train.loaders import SearchLoaders, evaluate, make_loaders

LATENCY_WARMUP, LATENCY_REPEATS = 5, 20


class TrainingEvaluator:
    """Scores an architecture by training it briefly.

    Each trial builds the architecture as a stand-alone network (the derived network of ``pflnas
    retrain``) at the search network's size -- the space's ``init_channels`` and ``layers``, so ``--set
    space.init_channels=...`` scales trials as it scales a supernet; block spaces are fixed by their
    skeleton -- trains it for ``trials.epochs`` epochs on the weight half of the search split with the
    search's weight optimizer settings (SGD, cosine schedule, gradient clipping), and scores it on the
    held-out half. Returns ``accuracy`` and ``params`` always, and ``latency_ms`` (median forward time at
    batch 1 on the run's device, :func:`pflnas.measure.speed.measure_latency`) when an objective needs it."""

    def __init__(
        self,
        cfg: SearchConfig,
        device: torch.device,
        *,
        latency: bool = False,
        loaders: SearchLoaders | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.latency = latency
        self.loaders = loaders or make_loaders(cfg, device)

    def build(self, arch: Architecture) -> nn.Module:
        cell = not arch.space.is_block
        net = resolve_network_config(
            arch,
            dataset=self.cfg.data.dataset,
            num_classes=self.loaders.num_classes,
            in_channels=self.loaders.in_channels,
            init_channels=arch.space.init_channels if cell else None,
            layers=arch.space.layers if cell else None,
            image_size=self.loaders.image_size,
        )
        self.input_shape = net.input_shape(1)
        model = build_from_config(arch, net).to(self.device)
        if self.cfg.run.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def __call__(self, arch: Architecture) -> dict[str, float]:
        cfg = self.cfg
        seed_everything(cfg.run.seed)
        model = self.build(arch)
        train_loss = self._train(model)
        _, accuracy = evaluate(model, self.loaders.evaluate, self._autocast)
        out = {
            "accuracy": float(accuracy),
            "params": float(count_parameters(model)),
            "train_loss": train_loss,
        }
        if self.latency:
            out["latency_ms"] = self._latency(model)
        return out

    def _train(self, model: nn.Module) -> float:
        cfg, loader = self.cfg, self.loaders.train
        w = cfg.weights
        params = [p for p in model.parameters() if p.requires_grad]  # the classifier at least
        optimizer = torch.optim.SGD(params, lr=w.lr, momentum=w.momentum, weight_decay=w.weight_decay)
        steps = cfg.trials.epochs * len(loader)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(steps, 1), eta_min=w.lr_min
        )
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        seen = 0
        for epoch in range(cfg.trials.epochs):
            loader.set_epoch(epoch)
            for x, y in loader:
                optimizer.zero_grad(set_to_none=True)
                with self._autocast():
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
                loss.backward()
                nn.utils.clip_grad_norm_(params, w.grad_clip)
                optimizer.step()
                scheduler.step()
                if epoch == cfg.trials.epochs - 1:
                    loss_sum += loss.detach() * len(y)
                    seen += len(y)
        return loss_sum.item() / max(seen, 1)

    def _latency(self, model: nn.Module) -> float:
        speed = SpeedConfig(
            device=self.device.type,
            warmup=LATENCY_WARMUP,
            repeats=LATENCY_REPEATS,
            amp=self.cfg.run.amp,
            channels_last=self.cfg.run.channels_last,
        )
        guard: Any = (
            torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()
        )
        with guard:
            return measure_latency(model, self.input_shape, speed).median

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.cfg.run.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)
