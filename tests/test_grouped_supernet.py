"""A grouped supernet of N seeds computes exactly what N separate per_source DARTS supernets compute (float64,
1e-10): outputs, weight and alpha gradients, BatchNorm statistics, per-seed clipping, three first-order DARTS
steps and the derived architectures; the converters; what it refuses."""

from __future__ import annotations

import pytest
import torch
from _batched import TOL, float64, gap, grads, per_seed_gap
from _spaces import tiny
from torch import nn

from pflnas.arch.derive import derive_architecture
from pflnas.config.search import ArchOptimConfig
from pflnas.errors import ConfigError
from pflnas.strategies import create_strategy
from pflnas.supernet import build_supernet
from pflnas.supernet.grouped import GroupedSupernet
from pflnas.supernet.grouped_state import (
    from_grouped,
    seed_probabilities,
    to_grouped,
)

SPACES = ["cell_v1", "darts"]


pytestmark = pytest.mark.usefixtures(float64.__name__)


def _nets(name: str, seeds: int = 3):
    """``seeds`` per_source supernets seeded differently, and a grouped one holding their numbers."""
    space = tiny(name)
    nets = []
    for s in range(seeds):
        torch.manual_seed(s)
        nets.append(build_supernet(space, 10, layout="per_source"))
    torch.manual_seed(99)
    grouped = GroupedSupernet(space, 10, seeds)
    grouped.load_state_dict(to_grouped([n.state_dict() for n in nets], grouped))
    return nets, grouped


def _batch(seeds: int = 3):
    return torch.randn(seeds, 4, 3, 16, 16), torch.randint(0, 10, (seeds, 4))


def _losses(nets, grouped, x, y):
    """Each separate net's cross-entropy on its seed's batch, and the grouped net's sum over seeds."""
    separate = [nn.functional.cross_entropy(net(x[s]), y[s]) for s, net in enumerate(nets)]
    logits = grouped(x)
    return separate, sum(nn.functional.cross_entropy(logits[s], y[s]) for s in range(len(nets)))


@pytest.mark.parametrize("name", SPACES)
def test_outputs_gradients_and_statistics_agree(name):
    nets, grouped = _nets(name)
    assert any(c.reduction for c in nets[0].cells) and any(not c.reduction for c in nets[0].cells)
    x, y = _batch()
    logits = grouped(x)
    assert logits.shape == (3, 4, 10)
    assert max((logits[s] - net(x[s])).abs().max().item() for s, net in enumerate(nets)) < TOL
    separate, total = _losses(nets, grouped, x, y)
    for loss in separate:
        loss.backward()
    total.backward()
    assert per_seed_gap(nets, grouped, grads(grouped)) < TOL  # weight and alpha gradients
    assert per_seed_gap(nets, grouped) < TOL  # BatchNorm running statistics of the two forwards


def test_converters_round_trip_and_refuse_other_states():
    nets, grouped = _nets("darts")
    back = from_grouped(grouped.state_dict(), grouped)
    for net, state in zip(nets, back):
        assert gap(net.state_dict(), state) == 0.0
        build_supernet(tiny("darts"), 10, layout="per_source").load_state_dict(state)  # strict: every key
    states = [n.state_dict() for n in nets]
    with pytest.raises(ConfigError, match="has 3 seeds; got 2 states"):
        to_grouped(states[:2], grouped)
    per_edge = build_supernet(tiny("darts"), 10, layout="per_edge").state_dict()
    with pytest.raises(ConfigError, match="state 1 is not a per_source supernet state"):
        to_grouped([states[0], per_edge, states[2]], grouped)
    with pytest.raises(ConfigError, match="missing"):
        from_grouped(nets[0].state_dict(), grouped)


def test_per_seed_clipping_equals_clip_grad_norm():
    nets, grouped = _nets("darts")
    x, y = _batch()
    x[1] *= 30.0  # seed 1's gradients grow: some seeds clip, some do not
    separate, total = _losses(nets, grouped, x, y)
    for loss in separate:
        loss.backward()
    total.backward()
    norms = grouped.weight_grad_norms()
    max_norm = norms.median().item()
    expected = [nn.utils.clip_grad_norm_(n.weight_parameters(), max_norm) for n in nets]
    assert (norms - torch.stack(expected)).abs().max() < TOL
    assert (norms > max_norm).any() and (norms <= max_norm).any()
    assert (grouped.clip_weight_grads(max_norm) - norms).abs().max() == 0.0
    assert per_seed_gap(nets, grouped, grads(grouped)) < TOL
    with pytest.raises(ConfigError, match="must be positive"):
        grouped.clip_weight_grads(0.0)


def _optimizers(net, grouped: bool):
    """DARTS' weight SGD and the darts strategy's Adam on the alphas."""
    sgd = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    cfg = ArchOptimConfig()
    if grouped:
        adam = torch.optim.Adam(
            net.arch_parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        return sgd, adam
    strategy = create_strategy("darts", cfg)
    strategy.attach(net)
    return sgd, strategy.optimizer


def _step(params, optimizer, loss) -> None:
    optimizer.zero_grad()
    loss.backward(inputs=params)
    optimizer.step()


@pytest.mark.parametrize("name", SPACES)
def test_three_darts_steps_agree(name):
    """First order: an Adam step of the alphas on a held-out batch, then a clipped SGD step of the weights."""
    nets, grouped = _nets(name)
    opts = [_optimizers(n, False) for n in nets]
    g_sgd, g_adam = _optimizers(grouped, True)
    torch.manual_seed(5)
    for _ in range(3):
        (xv, yv), (xt, yt) = _batch(), _batch()
        separate, total = _losses(nets, grouped, xv, yv)
        for net, (_, adam), loss in zip(nets, opts, separate):
            _step(net.arch_parameters(), adam, loss)
        _step(grouped.arch_parameters(), g_adam, total)
        separate, total = _losses(nets, grouped, xt, yt)
        for net, (sgd, _), loss in zip(nets, opts, separate):
            sgd.zero_grad()
            loss.backward(inputs=net.weight_parameters())
            nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
            sgd.step()
        g_sgd.zero_grad()
        total.backward(inputs=grouped.weight_parameters())
        grouped.clip_weight_grads(5.0)
        g_sgd.step()
    assert per_seed_gap(nets, grouped) < TOL  # weights, alphas and BatchNorm statistics
    space = tiny(name)
    for s, net in enumerate(nets):
        probs, ref = seed_probabilities(grouped, s), net.probabilities()
        assert probs.keys() == ref.keys()
        assert max(abs(probs[k][op] - p) for k in ref for op, p in ref[k].items()) < 1e-6  # float32 softmax
        found = derive_architecture(space, probs).to_dict()["cells"]
        assert found == derive_architecture(space, net.probabilities()).to_dict()["cells"]


def test_one_seed():
    (net,), grouped = _nets("darts", seeds=1)
    x = torch.randn(1, 2, 3, 16, 16)
    assert grouped(x).shape == (1, 2, 10)
    assert (grouped(x)[0] - net(x[0])).abs().max() < TOL
    assert seed_probabilities(grouped, 0) == net.probabilities()


def test_bad_inputs_fail_in_one_line():
    with pytest.raises(ConfigError, match="grouped supernets are for darts_cell and nb201_cell spaces"):
        GroupedSupernet(tiny("resnet50_block"), 10, 3)
    for seeds in (0, 2.0, True):
        with pytest.raises(ConfigError, match="positive whole number of seeds"):
            GroupedSupernet(tiny("darts"), 10, seeds)  # type: ignore[arg-type]
    grouped = GroupedSupernet(tiny("darts"), 10, 2)
    with pytest.raises(ConfigError, match=r"takes \[2, B, C, H, W\] inputs"):
        grouped(torch.randn(3, 1, 3, 16, 16))
    with pytest.raises(ConfigError, match="out of range"):
        seed_probabilities(grouped, 2)
