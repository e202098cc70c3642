"""Numerical safety for the training loops: NaN/Inf in a loss, the weight gradients or the architecture
parameters (values or gradients) is caught in the step that produced it.

A bad step must never reach an optimizer step or a checkpoint, so ``--resume`` can continue from the last
good one; but on a GPU a host read per step would stall the launch queue. So verdicts are read at once
where that is free (CPU, or ``run.nonfinite=skip``) and deferred on a GPU in stop mode. The modes and
their costs are described on :class:`FiniteGuard`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from pflnas.errors import PflnasError

NONFINITE_MODES = ("stop", "skip")
GPU_CHECK_EVERY = 25  # stop mode on a GPU: steps between host reads of the device-side verdicts


class NonFiniteError(PflnasError):
    """A NaN or Inf appeared in training; the message names the step, the tensor and the kept checkpoint."""


@dataclass
class _Pending:
    finite: Tensor  # 0-d bool, on the device
    what: str
    epoch: int
    step: int
    named: list[tuple[str, Tensor]] | None  # eager mode: the tensors to search for the culprit
    fatal: bool  # stops the run even in skip mode (nothing to skip: e.g. alphas already non-finite)


def total_norm(tensors: Iterable[Tensor]) -> Tensor | None:
    """The 2-norm over all ``tensors`` (foreach kernels, no host sync; None for none): not finite when an
    entry is not (or when the norm overflows, which only absurdly large finite values make it do)."""
    tensors = [t.detach() for t in tensors]
    if not tensors:
        return None
    norms = torch._foreach_norm(tensors)  # what clip_grad_norm_ uses; public get_total_norm needs torch 2.6
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


class FiniteGuard:
    """Collects per-step "is finite" verdicts and acts on them.

    ``run.nonfinite=stop`` (the default) raises :class:`NonFiniteError` naming the epoch, the step and the
    tensor; the loop has not stepped the optimizer with it and writes no checkpoint after it, so the last
    good checkpoint is what ``--resume`` continues from. ``run.nonfinite=skip`` drops the batch instead
    (gradients discarded, no optimizer step), counts it, and stops anyway once more than
    ``run.nonfinite_max_skips`` batches were skipped.

    On the CPU (and in skip mode) each verdict is read at once -- a host read costs nothing on the CPU --
    so a bad step is refused before any optimizer applies it, and the culprit is named: the gradients are
    checked per tensor (one ``foreach`` norm kernel) before clipping, which would spread one NaN over all
    of them. On a GPU in stop mode each verdict is ``isfinite`` of a scalar the loop already has (the
    losses, the total norm that gradient clipping computes anyway, one fused norm over the small
    architecture tensors), kept on the device and read every :data:`GPU_CHECK_EVERY` steps and always
    before a checkpoint or an epoch record is written (:meth:`flush`): about ten tiny kernels per step and
    no sync; the run stops at most that many steps late, names the first bad step and the kind of tensor,
    and never saves a poisoned checkpoint. Skip mode has to decide before each optimizer step, so on a GPU
    it reads one scalar per step: the price of opting in.

    ``watch(what, value, named)`` records whether the scalar ``value`` is finite; ``named`` are the
    ``(name, tensor)`` pairs ``value`` summarises, searched for the culprit when the verdict is read at once.
    ``ok()`` is called before an optimizer steps: when verdicts are read at once (CPU, skip mode) it reads
    them and returns ``False`` to skip the batch (skip mode) or raises :class:`NonFiniteError` (stop mode,
    skip mode past its cap, or a ``fatal`` verdict); when they are deferred (GPU, stop mode) it returns
    ``True``. ``step_done()`` ends a step (and reads deferred verdicts when due); ``flush()`` reads whatever
    is pending and must precede every checkpoint. With ``reduce`` (torchrun: an in-place sum over ranks)
    every rank takes the same decision. ``kept()`` says, for the message, which checkpoint is left as it was.
    """

    def __init__(
        self,
        mode: str,
        max_skips: int,
        device: torch.device,
        *,
        kept: Callable[[], str],
        reduce: Callable[[Tensor], Tensor] | None = None,
        every: int | None = None,
    ):
        if mode not in NONFINITE_MODES:
            raise PflnasError(f"run.nonfinite must be one of {', '.join(NONFINITE_MODES)}, got {mode!r}")
        self.mode, self.max_skips, self.kept, self.reduce = mode, max_skips, kept, reduce
        eager = device.type == "cpu" or mode == "skip"
        self.every = every if every is not None else (1 if eager else GPU_CHECK_EVERY)
        self.skipped = 0  # batches skipped over the whole run (a resumed run restores it)
        self._pending: list[_Pending] = []
        self._where = (0, 0)
        self._steps = 0

    def at(self, epoch: int, step: int) -> None:
        """The (0-based) epoch and step the next verdicts belong to."""
        self._where = (epoch, step)

    def watch(
        self,
        what: str,
        value: Tensor | None,
        named: Iterable[tuple[str, Tensor]] | None = None,
        fatal: bool = False,
    ) -> None:
        if value is None:
            return
        finite = torch.isfinite(value.detach()).all()
        keep = list(named) if named is not None and self.every == 1 else None
        self._pending.append(_Pending(finite, what, *self._where, keep, fatal))

    @property
    def eager(self) -> bool:
        """Verdicts are read at once (CPU, skip mode), so a culprit can be named."""
        return self.every == 1

    def watch_each(self, what: str, named: Iterable[tuple[str, Tensor]]) -> None:
        """Eager mode: one verdict over ``named`` tensors (one foreach norm kernel) that can name the first
        non-finite one. Call it before anything mixes them (gradient clipping spreads a NaN to all)."""
        named = [(n, t.detach()) for n, t in named]
        if not named:
            return
        norms = torch._foreach_norm([t for _, t in named])  # clip_grad_norm_'s kernel
        self.watch(what, torch.stack([n.float() for n in norms]), [(n, v) for (n, _), v in zip(named, norms)])

    def ok(self) -> bool:
        """Before an optimizer step: False to skip the batch (see the class docstring)."""
        return self._read() if self.every == 1 else True

    def step_done(self) -> None:
        """After a step: deferred verdicts are read every ``every`` steps."""
        self._steps += 1
        if self.every > 1 and self._steps % self.every == 0:
            self._read()

    def flush(self) -> None:
        """Read the pending verdicts now (stop mode on a GPU defers them); raises if one was not finite.
        Skip mode reads every step in :meth:`ok`, so nothing is pending here."""
        self._read()

    def _read(self) -> bool:
        pending, self._pending = self._pending, []
        if not pending:
            return True
        bad = torch.stack([~p.finite for p in pending]).to(torch.int32)
        if self.reduce is not None:
            bad = self.reduce(bad)  # torchrun: bad anywhere is bad everywhere
        flags = bad.tolist()  # the one host read
        first = next((i for i, b in enumerate(flags) if b), None)
        if first is None:
            return True
        culprit = pending[first]
        if self.mode == "skip" and not culprit.fatal:
            self.skipped += 1
            if self.skipped <= self.max_skips:
                return False
        raise NonFiniteError(self._message(culprit, late=pending[-1]))

    def _message(self, p: _Pending, late: _Pending) -> str:
        what = (_first_nonfinite(p.named) if p.named else None) or p.what
        where = f"epoch {p.epoch + 1} step {p.step + 1}"
        if (late.epoch, late.step) != (p.epoch, p.step):  # read late (GPU): say when it was read
            where += f" (read at epoch {late.epoch + 1} step {late.step + 1})"
        if self.mode == "skip" and not p.fatal:
            return (
                f"{self.skipped} batches had NaN/Inf, more than run.nonfinite_max_skips={self.max_skips} "
                f"(the last in {what} at {where}); {self.kept()}"
            )
        advice = "lower the learning rate or check the data"
        if self.mode == "stop" and not p.fatal:
            advice += ", or set run.nonfinite=skip to skip such batches"
        return f"NaN/Inf in {what} at {where}; {self.kept()}; {advice}"


def _first_nonfinite(named: list[tuple[str, Tensor]]) -> str | None:
    for name, t in named:
        if not torch.isfinite(t).all():
            return name
    return None
