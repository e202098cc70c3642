"""What the search loop needs to run under ``torchrun``: gradient averaging, sync checks, BatchNorm
statistics, rank-0-only decisions and an agreement check on the export.

Every method is a no-op (or the identity) in a single process, so the loop calls them unconditionally.
Every method that communicates is a collective: all ranks must call it in the same order, and every check
raises on *all* ranks at once (the verdict comes from reduced values every rank sees), so a mismatch is an
error on every process rather than a hang. The choices for gradients, BatchNorm and evaluation are on
:meth:`SearchSync.reduce_grads`, :meth:`SearchSync.average_bn_statistics` and :meth:`SearchSync.sum_counts`.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pflnas.errors import ConfigError, PflnasError
from pflnas.train.distributed import DistInfo
from pflnas.utils_io import read_regular_bytes

T = TypeVar("T")

DEBUG_ALPHA_ENV = "PFLNAS_DEBUG_ALPHA_DIR"  # set: every rank appends its alphas after every step there


class SyncError(PflnasError):
    """Ranks of a distributed search disagree (architecture weights, weights or the export)."""


def check_global_batch(batch_size: int, info: DistInfo) -> int:
    """The per-rank batch: ``data.batch_size`` is the global batch and must split evenly over ranks."""
    if batch_size % info.world_size:
        raise ConfigError(
            f"data.batch_size {batch_size} is not divisible by the {info.world_size} processes; the batch "
            f"size is global: use a multiple of {info.world_size}"
        )
    return batch_size // info.world_size


class SearchSync:
    """The search loop's view of the process group."""

    def __init__(self, info: DistInfo):
        self.info = info

    @property
    def distributed(self) -> bool:
        return self.info.distributed

    # --- gradients -----------------------------------------------------------------------------------
    def reduce_grads(self, params: Sequence[Tensor]) -> None:
        """Average ``p.grad`` over ranks (``None`` as zeros where another rank has a gradient).

        One ``cat`` and one all-reduce per dtype; the averaged gradients become views of the reduced
        buffer (no copies back). A presence flag per parameter travels in the same buffer; the host reads
        it only on a rank that lacks some gradient (single-path strategies), so dense steps never sync.

        A gradient that is ``None`` on some ranks only (a single-path strategy whose ranks drew different
        paths) counts as zeros there, so the result is the gradient of the global-batch mean loss; one that
        is ``None`` on every rank stays ``None`` (the optimizer skips it, as a single process would).
        """
        if not self.distributed:
            return
        params = list(params)
        for index in _groups(params):
            group = [params[i] for i in index]
            ref = group[0]
            one, zero = ref.new_ones(1), ref.new_zeros(1)
            pieces = [p.new_zeros(p.numel()) if p.grad is None else p.grad.reshape(-1) for p in group]
            pieces += [zero if p.grad is None else one for p in group]  # presence flags, on the device
            flat = torch.cat(pieces)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            total = flat.numel() - len(group)
            flat[:total].div_(self.info.world_size)
            lacking = any(p.grad is None for p in group)
            present = (flat[total:] > 0).tolist() if lacking else [True] * len(group)
            for p, value, has in zip(group, flat[:total].split([p.numel() for p in group]), present):
                if has:
                    p.grad = value.view(p.shape)

    def average(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """The element-wise mean over ranks of each tensor (new tensors; the identity in one process)."""
        tensors = list(tensors)
        if not self.distributed:
            return tensors
        out: list[Tensor] = [t for t in tensors]
        for index in _groups(tensors):
            flat = torch.cat([tensors[i].detach().reshape(-1) for i in index])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat.div_(self.info.world_size)
            offset = 0
            for i in index:
                n = tensors[i].numel()
                out[i] = flat[offset : offset + n].view(tensors[i].shape)
                offset += n
        return out

    def sum_(self, t: Tensor) -> Tensor:
        """All-reduce (sum) ``t`` in place."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    # --- BatchNorm -----------------------------------------------------------------------------------
    def average_bn_statistics(self, model: nn.Module) -> None:
        """Average BatchNorm running means and variances over ranks (one all-reduce).

        BatchNorm normalises with per-rank batch statistics during training (standard DDP; SyncBatchNorm is
        GPU-only and would tie every one of the supernet's many BN layers to a collective per forward). The
        running statistics are averaged before every evaluation (so before every checkpoint and the export
        too): every rank evaluates, saves and exports the same model. For the running mean this is exactly
        the single-process value (the running average is linear); the running variance misses the spread
        of the per-rank means, and the per-rank batch statistics in training are why a multi-process search
        matches a single-process one with the same global batch closely but not bitwise.
        """
        if not self.distributed:
            return
        buffers = _bn_buffers(model)
        if not buffers:
            return
        for b, mean in zip(buffers, self.average(buffers)):
            b.copy_(mean)

    # --- checks --------------------------------------------------------------------------------------
    def verify(self, parts: dict[str, Sequence[Tensor]], where: str) -> None:
        """Raise :class:`SyncError` on every rank unless each named tensor list is bitwise equal on all
        ranks. One all-reduce (MAX of ``[x, -x]``: equal iff max == min element-wise)."""
        if not self.distributed:
            return
        flats, names = [], []
        for name, tensors in parts.items():
            tensors = [t.detach().reshape(-1) for t in tensors]
            if tensors:
                flats.append(torch.cat([t.double() for t in tensors]))
                names.append(name)
        if not flats:
            return
        flat = torch.cat(flats)
        finite = torch.isfinite(flat)
        bad = (~finite).any().double().reshape(1)
        values = torch.where(finite, flat, torch.zeros_like(flat))
        packed = torch.cat([values, bad, -values, -bad])
        dist.all_reduce(packed, op=dist.ReduceOp.MAX)
        n = len(values) + 1
        high, low = packed[:n], -packed[n:]
        if bool(high[-1] > 0) and bool(low[-1] > 0):
            raise SyncError(f"non-finite weights or architecture weights {where} (on every rank)")
        gap = (high - low).abs()
        if not bool((gap > 0).any()):
            return
        offset, report = 0, []
        for name, f in zip(names, flats):
            g = gap[offset : offset + len(f)]
            if bool((g > 0).any()):
                report.append(
                    f"{name}: {int((g > 0).sum())} of {len(f)} values, largest gap {g.max().item():.3g}"
                )
            offset += len(f)
        if bool(gap[-1] > 0):
            report.append("non-finite values on some ranks only")
        raise SyncError(
            f"ranks of the distributed search are out of sync {where}: {'; '.join(report)}. "
            "Every rank must compute identical updates (same code, config, data and seed on every process)"
        )

    def verify_model(self, model: Any, where: str, buffers: bool = False) -> None:
        """:meth:`verify` a supernet's architecture weights and weights (and, with ``buffers``, its
        BatchNorm statistics, equal only once they are averaged)."""
        if not self.distributed:
            return
        parts = {
            "architecture weights": model.arch_parameters(),
            "weights": model.weight_parameters(),
        }
        if buffers:
            parts["BatchNorm statistics"] = _bn_buffers(model)
        self.verify(parts, where)

    def sum_counts(self, sums: dict[str, Tensor], seen: int) -> int:
        """All-reduce (sum) a loop's running sums in place, in one collective; returns the global count.

        Evaluation is sharded over ranks (each rank a disjoint slice of the held-out split), so its sums
        are combined here."""
        if not self.distributed:
            return seen
        keys = list(sums)
        ref = sums[keys[0]]
        packed = self.sum_(torch.stack([*(sums[k].to(ref.dtype) for k in keys), ref.new_tensor(seen)]))
        for k, v in zip(keys, packed):
            sums[k] = v
        return int(packed[-1].item())

    def agree(self, text: str, what: str) -> None:
        """Raise :class:`SyncError` on every rank unless every rank passes the same ``text``."""
        if not self.distributed:
            return
        texts: list[Any] = [None] * self.info.world_size
        dist.all_gather_object(texts, text)
        differ = [r for r, t in enumerate(texts) if t != texts[0]]
        if differ:
            raise SyncError(
                f"ranks disagree on {what}: rank(s) {', '.join(map(str, differ))} differ from rank 0"
            )

    # --- rank 0 decides ------------------------------------------------------------------------------
    def from_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and return its result on every rank; an exception it raises is
        raised on every rank (the same message; rank 0 re-raises the original)."""
        if not self.distributed:
            return fn()
        outcome: list[Any] = [None]
        error: BaseException | None = None
        if self.info.is_main:
            try:
                outcome[0] = ("ok", fn())
            except Exception as exc:  # every rank must learn of it, or the others wait forever
                error = exc
                outcome[0] = ("config" if isinstance(exc, ConfigError) else "error", str(exc))
        dist.broadcast_object_list(outcome, src=0)
        kind, value = outcome[0]
        if error is not None:
            raise error
        if kind == "ok":
            return value
        raise (ConfigError if kind == "config" else PflnasError)(value)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.info.world_size
        dist.all_gather_object(out, obj)
        return out

    def load_checkpoint_from_main(self, path: Path, map_location: torch.device) -> dict[str, Any]:
        """Rank 0 reads the checkpoint file and sends its bytes; every rank loads the same state (so the
        run directory need not be readable from every node)."""
        from pflnas.train.checkpoint import load_checkpoint, load_checkpoint_from

        if not self.distributed:
            return load_checkpoint(path, map_location)
        data = self.from_main(lambda: _read_bytes(path))
        return load_checkpoint_from(io.BytesIO(data), path, map_location)


def _read_bytes(path: Path) -> bytes:
    return read_regular_bytes(path, "checkpoint")  # a FIFO or device there is one line, never a hang


def _bn_buffers(model: nn.Module) -> list[Tensor]:
    """Running means and variances of every BatchNorm layer (not ``num_batches_tracked``: the same on
    every rank, and an integer)."""
    return [
        b
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
        for b in (m.running_mean, m.running_var)
        if b is not None
    ]


def _groups(tensors: Sequence[Tensor]) -> list[list[int]]:
    """Indices grouped by (dtype, device), in first-seen order: the same on every rank."""
    groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.dtype, t.device), []).append(i)
    return list(groups.values())


class AlphaDump:
    """Debugging aid (``PFLNAS_DEBUG_ALPHA_DIR=DIR``): every rank appends its architecture weights after
    every step to ``DIR/alpha.rank<R>.jsonl`` (exact: floats round-trip through JSON) and its export to
    ``DIR/found.rank<R>.json``, so runs and ranks can be compared value by value."""

    def __init__(self, rank: int, directory: str | None = None):
        directory = directory if directory is not None else os.environ.get(DEBUG_ALPHA_ENV)
        self.dir = Path(directory) if directory else None
        self.rank = rank
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def enabled(self) -> bool:
        return self.dir is not None

    def step(self, epoch: int, step: int, alphas: Sequence[Tensor]) -> None:
        if self.dir is None:
            return
        values = torch.cat([a.detach().reshape(-1).double().cpu() for a in alphas]).tolist()
        line = json.dumps({"epoch": epoch, "step": step, "alpha": values})
        with (self.dir / f"alpha.rank{self.rank}.jsonl").open("a") as fh:
            fh.write(line + "\n")

    def export(self, text: str) -> None:
        if self.dir is not None:
            (self.dir / f"found.rank{self.rank}.json").write_text(text)
