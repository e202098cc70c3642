"""A search's checkpoint: what it holds and how a run continues from it.

Kept apart from the loop so the loop reads as a loop: :class:`SearchCheckpoint` builds the state dict at the
end of an epoch (or, on SIGINT/SIGTERM, inside one) and restores it, returning the :class:`Position` the loop
continues from. Under torchrun building and restoring are collectives (every rank's RNG state and running
sums travel in rank 0's file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pflnas.config.loader import to_dict
from pflnas.config.search import SearchConfig
from pflnas.device import rng_state, set_rng_state
from pflnas.errors import PflnasError
from pflnas.spaces.config import SpaceConfig
from pflnas.strategies import Strategy
from pflnas.supernet import Supernet
from pflnas.supernet.batched import BATCHED_FORMAT
from pflnas.train.dist_search import SearchSync

FORMAT = "pflnas-search-checkpoint-1"


@dataclass
class Position:
    """Where a search stands: ``epoch`` epochs done plus ``step`` steps of the next (a checkpoint saved on
    SIGINT/SIGTERM may lie inside an epoch, with this rank's running sums ``partial``), the wall time spent
    and the batches the NaN/Inf guard skipped."""

    epoch: int = 0
    step: int = 0
    partial: dict[str, float] | None = None
    elapsed: float = 0.0
    skipped: int = 0


@dataclass
class SearchCheckpoint:
    """Everything a search checkpoint holds beyond its :class:`Position`."""

    cfg: SearchConfig
    space: SpaceConfig
    model: Supernet
    optimizer: torch.optim.Optimizer
    scheduler: Any
    strategy: Strategy
    sync: SearchSync

    def state(self, at: Position) -> dict[str, Any]:
        """The checkpoint at ``at`` (every rank calls it: under torchrun it gathers the ranks' states)."""
        inside = at.step > 0
        distributed = self.sync.distributed
        return {
            "format": FORMAT,
            "epoch": at.epoch,
            "step": at.step,
            "partial": self.sync.gather(at.partial) if inside else None,
            # inside an epoch the ranks' BatchNorm statistics differ (they are averaged at its end)
            "buffers_ranks": self.sync.gather(self._buffers()) if inside and distributed else None,
            "nonfinite_skipped": at.skipped,
            "layout": self.model.layout,  # the model's state_dict keys depend on it
            "batched_format": BATCHED_FORMAT,  # how the batched layout lays out its tensors
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "strategy": self.strategy.state_dict(),
            "rng": rng_state(),
            "config": to_dict(self.cfg),
            "space": self.space.to_dict(),
            "elapsed": at.elapsed,
            **({"rng_ranks": self.sync.gather(rng_state())} if distributed else {}),
        }

    def _buffers(self) -> dict[str, Tensor]:
        return {name: buf.detach().cpu() for name, buf in self.model.named_buffers()}

    def restore(self, path: Path, device: torch.device) -> Position:
        """Load rank 0's checkpoint at ``path`` into the model, optimizers, strategy and RNG streams."""
        run_dir, info = path.parent, self.sync.info
        state = self.sync.load_checkpoint_from_main(path, device)
        if state.get("space") != self.space.to_dict():
            raise PflnasError(f"checkpoint in {run_dir} is for another search space; start a new run")
        saved = state.get("layout") or _old_layout(state)
        if saved != self.model.layout:
            raise PflnasError(
                f"checkpoint in {run_dir} holds a space.layout={saved} supernet, this run builds "
                f"{self.model.layout}; resume with space.layout={saved}"
            )
        if saved == "batched" and state.get("batched_format") != BATCHED_FORMAT:
            raise PflnasError(
                f"checkpoint in {run_dir} was written by an older batched layout (its wide tensors are "
                "laid out differently); start a new run"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.strategy.load_state_dict(state["strategy"])
        ranks = state.get("rng_ranks")
        same_world = ranks is not None and len(ranks) == info.world_size
        set_rng_state(ranks[info.rank] if same_world else state["rng"])
        at = Position(
            int(state["epoch"]),
            int(state.get("step", 0)),
            elapsed=float(state["elapsed"]),
            skipped=int(state.get("nonfinite_skipped", 0)),
        )
        if at.step:
            partials = state.get("partial") or []
            if len(partials) != info.world_size:
                raise PflnasError(
                    f"the checkpoint in {run_dir} was saved inside an epoch by {len(partials)} "
                    f"process(es); resume it with as many (torchrun --nproc-per-node {len(partials)})"
                )
            at.partial = partials[info.rank]
            if info.distributed:
                mine = state["buffers_ranks"][info.rank]
                with torch.no_grad():
                    for name, buf in self.model.named_buffers():
                        buf.copy_(mine[name])
        return at


def _old_layout(state: dict[str, Any]) -> str:
    """The layout of a checkpoint saved before checkpoints recorded it (run.share_param_free decided it)."""
    return (
        "per_source" if state.get("config", {}).get("run", {}).get("share_param_free", True) else "per_edge"
    )
