"""Replay the whole search step as one CUDA graph (``run.cuda_graph``).

A supernet step launches tens of thousands of small kernels (every candidate op of every edge, forward and
backward, for both steps); at the DARTS settings (C=16, batch 64) a fast GPU finishes each in microseconds,
so the step is bound by Python and launch overhead. Capturing the step once and replaying it makes it one
launch. The conditions that keep the capture valid are listed on :class:`GraphedStep`. Every batch is
still used exactly once and in order, so the run follows the eager run's arithmetic (up to kernel
choices), and the random streams are untouched (the body draws no random numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

Batch = Sequence[Tensor]
Body = Callable[[Batch, Batch], dict[str, Tensor]]


def make_capturable(optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """Let ``optimizers`` step inside a CUDA graph: ``capturable=True`` where the optimizer has the flag
    (Adam & co.), with any step counts moved onto the parameters' device (a checkpoint written without
    the flag keeps them on the CPU). Idempotent."""
    for opt in optimizers:
        for group in opt.param_groups:
            if "capturable" not in group:
                continue  # SGD: nothing on the host to begin with
            group["capturable"] = True
            for p in group["params"]:
                state = opt.state.get(p, {})
                step = state.get("step")
                if isinstance(step, Tensor) and (step.device != p.device or step.dtype != torch.float32):
                    state["step"] = step.to(device=p.device, dtype=torch.float32)


def compile_forward(module: torch.nn.Module, captured: bool) -> Callable[..., Tensor]:
    """``torch.compile(module)``; ``captured``: for a forward that runs inside :class:`GraphedStep`'s capture
    (``run.compile`` with ``run.cuda_graph``). Then inductor must not record CUDA graphs of its own inside
    ours (the default mode records none; ``triton.cudagraphs`` is pinned off in case a global config turned
    it on) and the shapes are static (``dynamic=False``): a smaller last batch, run eagerly, gets its own
    compiled entry instead of turning the captured one into a dynamic-shape kernel. Compiling happens in
    the eager warm-up steps, never during capture (see ``warmup_per_body``). Not ``max-autotune``: its
    kernel search takes minutes per graph."""
    return torch.compile(module, **compile_options(captured))


def compile_options(captured: bool) -> dict[str, Any]:
    """The ``torch.compile`` keywords of :func:`compile_forward` (also for ``nn.Module.compile``)."""
    return {"dynamic": False, "options": {"triton.cudagraphs": False}} if captured else {}


class GraphedStep:
    """Call like the step body: ``graphed(train_batch, arch_batch)``; returns the body's device tensors
    (for replayed steps these are the graph's static outputs, overwritten by the next replay: read or
    accumulate them before calling again). ``reset()`` drops the graph so the next call captures anew.

    What makes the capture valid (the search loop, :class:`pflnas.train.search.SearchRun`, refuses
    ``run.cuda_graph`` otherwise):

    * the step body (:class:`pflnas.train.search_step.SearchStep`) reads no tensor on the host, and the
      strategy's forward has a fixed path (not GDAS/SPOS, whose path changes every step on the host);
    * the optimizers update inside the graph: Adam runs with ``capturable=True`` (its step count on the
      GPU); SGD needs nothing; the learning rate is a Python number baked into the graph, so the graph is
      captured again whenever the loop says the step changed (every epoch: the LR schedule, warm-up end);
    * the batch shape is fixed: batches are copied into static input tensors; a smaller last batch runs
      eagerly; autocast runs with its weight-cast cache off (cached casts would be stale on replay);
    * the first capture follows a few eager warm-up steps on a side stream (cuDNN autotuning, lazy
      optimizer state), as the PyTorch CUDA-graph guide requires. Warm-up steps are real steps on real
      batches. ``warmup_per_body`` eager steps also follow every :meth:`set_body` (the search loop uses
      one under ``run.compile``: a new body may call the compiled forward in a new context, e.g. the first
      epoch with architecture steps, and torch.compile must compile that outside the capture).
    """

    def __init__(
        self,
        body: Body,
        optimizers: Sequence[torch.optim.Optimizer],
        device: torch.device,
        warmup_steps: int = 3,
        warmup_per_body: int = 0,
    ):
        if device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.body = body
        self.optimizers = list(optimizers)
        self.device = device
        self.warmup_left = warmup_steps
        self.warmup_per_body = warmup_per_body
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_in: list[Tensor] = []
        self.static_out: dict[str, Tensor] = {}
        self.captures = 0
        self.replays = 0
        self.eager_steps = 0

    def set_body(self, body: Body) -> None:
        """A new body (e.g. a new epoch's step context); the next call captures it."""
        self.body = body
        self.reset()
        self.warmup_left = max(self.warmup_left, self.warmup_per_body)

    def reset(self) -> None:
        self.graph = None
        self.static_in = []
        self.static_out = {}

    def _shapes_match(self, tensors: list[Tensor]) -> bool:
        return len(tensors) == len(self.static_in) and all(
            t.shape == s.shape and t.dtype == s.dtype for t, s in zip(tensors, self.static_in)
        )

    def __call__(self, train_batch: Batch, arch_batch: Batch) -> dict[str, Tensor]:
        tensors = [*train_batch, *arch_batch]
        n = len(train_batch)
        if self.warmup_left > 0:
            self.warmup_left -= 1
            return self._eager_on_side_stream(train_batch, arch_batch)
        if self.graph is not None and not self._shapes_match(tensors):
            self.eager_steps += 1  # e.g. a smaller last batch: run it as it is
            return self.body(train_batch, arch_batch)
        if self.graph is None:
            self._capture(tensors, n)
        else:
            for s, t in zip(self.static_in, tensors):
                s.copy_(t, non_blocking=True)
        assert self.graph is not None
        self.graph.replay()
        self.replays += 1
        return self.static_out

    def _eager_on_side_stream(self, train_batch: Batch, arch_batch: Batch) -> dict[str, Tensor]:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            out = self.body(train_batch, arch_batch)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.eager_steps += 1
        return out

    def _capture(self, tensors: list[Tensor], n: int) -> None:
        """Record the body on static copies of this step's batch (recording runs nothing: the caller
        replays the graph once to do this step)."""
        make_capturable(self.optimizers)
        self.static_in = [t.clone() for t in tensors]
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(self.device)
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.static_out = self.body(self.static_in[:n], self.static_in[n:])
        self.graph = graph
        self.captures += 1
