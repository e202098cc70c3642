"""A grouped supernet of N seeds on the NAS-Bench-201 cell space (stem, search cells, the residual reduction
blocks between the stages, BN-ReLU head) computes exactly what N separate per_source NB201 supernets compute
(float64, 1e-10), dense and with PC-DARTS' partial channels and edge normalisation: outputs, weight, alpha
and edge-normalisation gradients, BatchNorm statistics, the converters, three search steps of darts, darts2
and pcdarts through the loop's step body (with its per-seed losses, clipping and darts2 step sizes), the
optimizer states and the derived architectures; what it refuses."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _batched import TOL, float64, gap, grads, per_seed_gap
from _spaces import tiny
from torch import nn

from pflnas.arch.derive import derive_architecture
from pflnas.config.search import ArchOptimConfig
from pflnas.errors import ConfigError
from pflnas.ops.blocks import ResNetBasicBlock
from pflnas.strategies import StepContext, create_strategy
from pflnas.supernet import build_supernet
from pflnas.supernet.grouped import GroupedDartsSupernet, GroupedNB201Supernet, GroupedSupernet
from pflnas.supernet.grouped_state import (
    from_grouped,
    seed_probabilities,
    seed_strengths,
    split_optimizer,
    to_grouped,
)
from pflnas.train.search_step import SearchStep, sgd_virtual_step

SEEDS = 3
OPTIONS = {"dense": {}, "pcdarts": {"partial_channels": 2, "edge_norm": True}}

pytestmark = pytest.mark.usefixtures(float64.__name__)


def _nets(options: dict[str, Any]):
    """3 per_source NB201 supernets seeded differently, with N(0, 1) architecture parameters (so that the
    mixing and the edge normalisation matter), and a grouped one holding their numbers."""
    nets = []
    for s in range(SEEDS):
        torch.manual_seed(s)
        net = build_supernet(tiny("nb201"), 10, layout="per_source", **options)
        with torch.no_grad():
            for p in net.arch_parameters():
                p.normal_()
        nets.append(net)
    torch.manual_seed(99)
    grouped = GroupedSupernet(tiny("nb201"), 10, SEEDS, **options)
    grouped.load_state_dict(to_grouped([n.state_dict() for n in nets], grouped))
    return nets, grouped


def _batch():
    return torch.randn(SEEDS, 4, 3, 16, 16), torch.randint(0, 10, (SEEDS, 4))


def test_the_space_kind_picks_the_grouped_form():
    assert type(GroupedSupernet(tiny("nb201"), 10, 2)) is GroupedNB201Supernet
    assert type(GroupedSupernet(tiny("darts"), 10, 2)) is GroupedDartsSupernet
    with pytest.raises(ConfigError, match="darts_cell and nb201_cell spaces; 'resnet50_block'") as err:
        GroupedSupernet(tiny("resnet50_block"), 10, 2)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="GroupedNB201Supernet is not the grouped form of darts_cell"):
        GroupedNB201Supernet(tiny("darts"), 10, 2)


@pytest.mark.parametrize("options", OPTIONS)
def test_outputs_gradients_and_statistics_agree(options):
    nets, grouped = _nets(OPTIONS[options])
    assert sum(isinstance(c, ResNetBasicBlock) for c in nets[0].cells) == 2  # the stages' reductions
    x, y = _batch()
    logits, separate = grouped(x), [net(x[s]) for s, net in enumerate(nets)]
    assert logits.shape == (SEEDS, 4, 10)
    assert max((logits[s] - out).abs().max().item() for s, out in enumerate(separate)) < TOL
    for s, out in enumerate(separate):
        nn.functional.cross_entropy(out, y[s]).backward()
    sum(nn.functional.cross_entropy(logits[s], y[s]) for s in range(SEEDS)).backward()
    arch = grouped.arch_parameters()  # node1's beta has one edge: its softmax is 1, its gradient 0
    assert all(p.grad is not None and (p.grad.abs().max() > 0 or p.shape[-1] == 1) for p in arch)
    assert per_seed_gap(nets, grouped, grads(grouped)) < TOL  # weight, alpha (and beta) gradients
    assert per_seed_gap(nets, grouped) < TOL  # BatchNorm running statistics of the two forwards


@pytest.mark.parametrize("options", OPTIONS)
def test_converters_round_trip(options):
    nets, grouped = _nets(OPTIONS[options])
    state = grouped.state_dict()
    back = from_grouped(state, grouped)
    for net, seed_state in zip(nets, back):
        assert gap(net.state_dict(), seed_state) == 0.0
        build_supernet(tiny("nb201"), 10, layout="per_source", **OPTIONS[options]).load_state_dict(seed_state)
    assert gap(to_grouped(back, grouped), state) == 0.0
    darts = build_supernet(tiny("darts"), 10, layout="per_source").state_dict()
    with pytest.raises(ConfigError, match="state 2 is not a per_source supernet state"):
        to_grouped([n.state_dict() for n in nets[:2]] + [darts], grouped)


def _optimizer_gap(grouped, optimizer, nets, separate, params) -> float:
    """The largest difference between the grouped optimizer's state, split per seed, and each separate
    search's optimizer state (``params(net)``: the parameters it steps)."""
    mine = [type(optimizer)(params(net), lr=0.1) for net in nets]
    split_optimizer(grouped, optimizer, nets, mine)
    gaps = [0.0]
    for opt, ref in zip(mine, separate):
        assert len(ref.state) == len(opt.state) > 0
        for p, entries in ref.state.items():
            gaps += [(torch.as_tensor(v) - opt.state[p][k]).abs().max().item() for k, v in entries.items()]
    return max(gaps)


def _search(net, strategy_name: str, clip: float):
    """The loop's pieces for one supernet (separate or grouped): strategy, weight SGD, step body, context."""
    strategy = create_strategy(strategy_name, ArchOptimConfig())
    strategy.attach(net)
    weights = net.weight_parameters()
    sgd = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)
    body = SearchStep(net, strategy, sgd, weights, grad_clip=clip)
    return strategy, sgd, body, StepContext(loss=body.loss, virtual_step=sgd_virtual_step(sgd), lr=0.025)


@pytest.mark.parametrize("strategy_name", ["darts", "darts2", "pcdarts"])
def test_three_search_steps_agree(strategy_name):
    """Three steps of the loop's body (architecture step on a held-out batch, clipped SGD step of the
    weights): per-seed outputs, weights, alphas, BatchNorm statistics, both optimizers' states, and the
    architectures each seed derives."""
    options = create_strategy(strategy_name, ArchOptimConfig()).supernet_options()
    nets, grouped = _nets(options)
    # the weight gradients' norms are about 1.5-2.7 with partial channels, 3-7 without: some seeds clip
    clip = 1.8 if options else 5.0
    separate = [_search(net, strategy_name, clip) for net in nets]
    g_strategy, g_sgd, g_body, g_ctx = _search(grouped, strategy_name, clip)
    torch.manual_seed(5)
    norms = []
    for _ in range(3):
        (xt, yt), (xv, yv) = _batch(), _batch()
        out = g_body((xt, yt), (xv, yv), g_ctx, True)
        assert out is not None
        norms.append(out["grad_norm"])
        for s, (_, _, body, ctx) in enumerate(separate):
            ref = body((xt[s], yt[s]), (xv[s], yv[s]), ctx, True)
            assert ref is not None and out.keys() == ref.keys()
            assert max((out[k][s].double() - ref[k].double()).abs().item() for k in ref) < TOL
    assert (torch.stack(norms) > clip).any() and (torch.stack(norms) <= clip).any()
    assert per_seed_gap(nets, grouped) < TOL  # weights, alphas, betas and BatchNorm statistics
    sgds = [sgd for _, sgd, _, _ in separate]
    adams = [strategy.optimizer for strategy, _, _, _ in separate]
    assert _optimizer_gap(grouped, g_sgd, nets, sgds, lambda n: n.weight_parameters()) < TOL
    assert _optimizer_gap(grouped, g_strategy.optimizer, nets, adams, lambda n: n.arch_parameters()) < TOL
    space = tiny("nb201")
    for s, (strategy, _, _, _) in enumerate(separate):
        found = derive_architecture(space, seed_probabilities(grouped, s), None, seed_strengths(grouped, s))
        assert found.to_dict()["cells"] == strategy.export().to_dict()["cells"]


def test_the_group_rules_know_every_grouped_form():
    """The torch-free rule (what ``--seeds`` and ``pflnas study`` accept) and the grouped forms agree."""
    from pflnas.supernet.grouped import GROUPED_FORMS
    from pflnas.train.group_rules import GROUPED_KINDS

    assert set(GROUPED_KINDS) == set(GROUPED_FORMS)
