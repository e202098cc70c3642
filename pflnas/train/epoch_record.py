"""The per-epoch record of a search: the epoch's running sums, one row of ``metrics.jsonl`` (losses,
accuracies, the op probabilities and the collapse diagnostics the analysis reads) and the progress line
that summarises it. Built from the strategy's current state and the sums, apart from the loop that trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pflnas.arch.chance import chance_share
from pflnas.arch.collapse import collapse_diagnostics, thresholds_from
from pflnas.config.search import SearchConfig
from pflnas.measure.latency_objective import LatencyTerm
from pflnas.strategies import Strategy


def _entropy(probs: dict[str, dict[str, float]]) -> float:
    ents = [-sum(p * math.log(p) for p in dist.values() if p > 0) for dist in probs.values()]
    return sum(ents) / len(ents)


def epoch_record(
    cfg: SearchConfig,
    strategy: Strategy,
    epoch: int,
    lr: float,
    means: dict[str, float],
    validation: tuple[float, float],
    *,
    search_arch: bool,
    latency: LatencyTerm | None,
    skipped: int,
) -> dict[str, Any]:
    """The row of epoch ``epoch``: ``means`` of the training ``loss``, ``acc`` and ``arch`` (architecture
    loss) over the epoch, ``validation`` = (loss, accuracy) on the held-out evaluation slice."""
    probs = strategy.probabilities()
    current = strategy.export()
    share = current.param_free_share()
    diagnostics = collapse_diagnostics(probs, current, thresholds_from(cfg.collapse))
    if not strategy.updates_alphas:  # SPOS: untouched alphas are no sign of collapse
        diagnostics["collapse"] = {"flagged": False, "reasons": []}
    val_loss, val_acc = validation
    return {
        "epoch": epoch,
        "lr": lr,
        "train_loss": means["loss"],
        "train_acc": means["acc"],
        "arch_loss": means["arch"] if search_arch else None,
        "arch_step": search_arch,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "param_free_share": None if math.isnan(share) else share,
        "param_free_chance": chance_share(current.space, cfg.strategy.name),  # the share's null
        "mean_entropy": _entropy(probs),
        "op_counts": current.op_counts(),
        **diagnostics,
        **({} if latency is None else {"expected_latency_ms": latency.expected_ms()}),
        **({"skipped_batches": skipped} if cfg.run.nonfinite == "skip" else {}),
        "probs": probs,
    }


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """The progress line of a record."""
    share = record["param_free_share"]
    mass = record["param_free_mass"]
    collapse = record["collapse"]
    latency = record.get("expected_latency_ms")
    return (
        f"epoch {record['epoch'] + 1}/{epochs}  "
        f"train loss {record['train_loss']:.3f} acc {record['train_acc']:.3f}"
        f"  val loss {record['val_loss']:.3f} acc {record['val_acc']:.3f}"
        f"  param-free share {share if share is not None else float('nan'):.2f}"
        f" (chance {record['param_free_chance']:.2f})"
        f" mass {mass if mass is not None else float('nan'):.2f}"
        f"  skips {record['skip_count']}  entropy {record['mean_entropy']:.2f}"
        + (f"  E[latency] {latency:.3f} ms" if latency is not None else "")
        + (f"  COLLAPSE? {'; '.join(collapse['reasons'])}" if collapse["flagged"] else "")
    )


@dataclass
class EpochSums:
    """An epoch's running sums as device tensors (float64: read once, at the epoch's end), the images
    seen and the batches skipped; ``partial()`` is what a checkpoint inside the epoch keeps of them."""

    values: dict[str, Tensor]
    seen: int = 0
    skipped: int = 0

    @classmethod
    def resume(cls, partial: dict[str, float] | None, device: torch.device) -> EpochSums:
        partial = partial or {}
        values = {
            k: torch.tensor(partial.get(k, 0.0), dtype=torch.float64, device=device)
            for k in ("loss", "correct", "arch")
        }
        return cls(values, int(partial.get("seen", 0)), int(partial.get("skipped", 0)))

    def add(self, out: dict[str, Tensor], n: int) -> None:
        """A step's outputs over ``n`` training images."""
        self.values["loss"] += out["loss"] * n
        self.values["correct"] += out["correct"]
        if "arch_loss" in out:
            self.values["arch"] += out["arch_loss"].double() * n
        self.seen += n

    def partial(self) -> dict[str, float]:
        return {k: v.item() for k, v in self.values.items()} | {"seen": self.seen, "skipped": self.skipped}

    def means(self, seen: int) -> dict[str, float]:
        """Per-image means over ``seen`` images (under torchrun: the global count; the sums reduced)."""
        v, n = self.values, max(seen, 1)
        return {"loss": v["loss"].item() / n, "acc": v["correct"].item() / n, "arch": v["arch"].item() / n}

    def postfix(self, search_arch: bool) -> dict[str, str]:
        """The progress bar's running means (a host read)."""
        v, n = self.values, self.seen
        return {
            "loss": f"{v['loss'].item() / n:.3f}",
            "acc": f"{v['correct'].item() / n:.3f}",
            "arch": f"{v['arch'].item() / n:.3f}" if search_arch else "warm-up",
        }
