"""Helpers of the batched-layout equivalence tests (float64, 1e-10): a pair of supernets holding the same
numbers in two layouts, the largest difference of two state dicts, gradients as a state dict, and a few
search steps through the loop's :class:`SearchStep`."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pflnas.config.search import ArchOptimConfig
from pflnas.spaces.config import SpaceConfig
from pflnas.strategies import StepContext, Strategy, create_strategy
from pflnas.supernet import build_supernet
from pflnas.supernet.grouped_state import from_grouped
from pflnas.supernet.layouts import to_batched
from pflnas.supernet.network import Supernet
from pflnas.train.search_step import SearchStep, sgd_virtual_step

TOL = 1e-10


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def pair(
    space: SpaceConfig, layout: str = "per_edge", randomise_arch: bool = False, **options: Any
) -> tuple[Supernet, Supernet]:
    """A ``layout`` supernet and a batched one holding the same numbers (the reference seeds both).
    ``options``: build_supernet's (e.g. PC-DARTS' partial channels); ``randomise_arch`` draws the
    architecture parameters from N(0, 1) so that they matter (e.g. edge normalisation's)."""
    torch.manual_seed(0)
    ref = build_supernet(space, 10, layout=layout, **options)
    if randomise_arch:
        with torch.no_grad():
            for p in ref.arch_parameters():
                p.normal_()
    torch.manual_seed(1)
    batched = build_supernet(space, 10, layout="batched", **options)
    batched.load_state_dict(to_batched(ref.state_dict(), batched))
    return ref, batched


def gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], skip: str | None = None) -> float:
    """The largest difference over the entries of ``a`` and ``b`` (the same keys), but keys containing
    ``skip``."""
    assert set(a) == set(b)
    keys = [k for k in a if skip is None or skip not in k]
    return max((a[k].double() - b[k].double()).abs().max().item() for k in keys) if keys else 0.0


def grads(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict with every parameter replaced by its gradient (so the converters apply); a parameter
    no path reached has zeros (a wide op's unused slices get zeros, unused per-edge modules None)."""
    return {
        **net.state_dict(),
        **{k: torch.zeros_like(p) if p.grad is None else p.grad for k, p in net.named_parameters()},
    }


def per_seed_gap(nets: list, grouped: torch.nn.Module, state: dict[str, torch.Tensor] | None = None) -> float:
    """The largest difference between each separate net and its seed's part of ``grouped``: their states,
    or (``state``: a grouped state of gradients, as :func:`grads` gives) their gradients."""
    seeds = from_grouped(grouped.state_dict() if state is None else state, grouped)  # type: ignore[arg-type]
    refs = [n.state_dict() for n in nets] if state is None else [grads(n) for n in nets]
    return max(gap(ref, mine) for ref, mine in zip(refs, seeds))


def search_steps(
    net: Supernet, batches, strategy_name: str, seed: int = 7, momentum: float = 0.9, decay: float = 3e-4
) -> Strategy:
    """``strategy_name``'s search steps on ``batches`` (``(train, held-out)`` pairs), torch seeded with
    ``seed`` first so that sampling strategies draw alike in every layout; SGD with ``momentum`` and weight
    ``decay``."""
    torch.manual_seed(seed)
    strategy = create_strategy(strategy_name, ArchOptimConfig())
    strategy.attach(net)
    weights = net.weight_parameters()
    opt = torch.optim.SGD(weights, lr=0.025, momentum=momentum, weight_decay=decay)
    body = SearchStep(net, strategy, opt, weights, grad_clip=5.0)
    ctx = StepContext(loss=body.loss, virtual_step=sgd_virtual_step(opt), lr=0.025)
    for train, val in batches:
        body(train, val, ctx, True)
    return strategy


def batches(steps: int, seed: int = 5, n: int = 4) -> list:
    torch.manual_seed(seed)
    return [
        tuple((torch.randn(n, 3, 16, 16), torch.randint(0, 10, (n,))) for _ in range(2)) for _ in range(steps)
    ]
