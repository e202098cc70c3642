"""Strategy contract, run for every registered strategy."""

import copy

import pytest
import torch
import torch.nn.functional as F

from pflnas.configs import ArchOptimConfig
from pflnas.spaces import load_space
from pflnas.strategies import StepContext, create_strategy, list_strategies
from pflnas.supernet import build_supernet

STRATEGIES = list_strategies()


def setup(name, seed=0):
    torch.manual_seed(seed)
    space = load_space("cell_v1").replace(init_channels=4, layers=3)
    strategy = create_strategy(name, ArchOptimConfig(lr=0.01))
    net = build_supernet(space, 10, **strategy.supernet_options())
    strategy.attach(net)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)

    def loss(batch):
        x, y = batch
        return F.cross_entropy(net(x), y)

    def virtual_step(params, grads):
        return [0.05 * (g + 3e-4 * p.detach()) for p, g in zip(params, grads)]

    ctx = StepContext(loss=loss, virtual_step=virtual_step, lr=0.05)
    batches = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))) for _ in range(2)]
    return net, strategy, opt, ctx, batches


def snapshot(params):
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("name", STRATEGIES)
def test_arch_step_changes_only_alphas(name):
    net, strategy, opt, ctx, (tb, vb) = setup(name)
    # give the weights a momentum buffer so the virtual step has state to read
    ctx.loss(tb).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    weights_before = snapshot(net.weight_parameters())
    alphas_before = snapshot(net.arch_parameters())
    logs = strategy.arch_step(tb, vb, ctx)
    assert torch.isfinite(logs["arch_loss"])
    for before, p in zip(weights_before, net.weight_parameters()):
        assert torch.equal(before, p.detach())  # bitwise: second order restores from a copy
        assert p.grad is None
    changed = [not torch.equal(b, a.detach()) for b, a in zip(alphas_before, net.arch_parameters())]
    assert all(changed)


@pytest.mark.parametrize("name", STRATEGIES)
def test_weight_step_changes_only_weights(name):
    net, strategy, opt, ctx, (tb, _) = setup(name)
    alphas_before = snapshot(net.arch_parameters())
    weights_before = snapshot(net.weight_parameters())
    opt.zero_grad()
    ctx.loss(tb).backward()
    opt.step()
    assert all(torch.equal(b, a.detach()) for b, a in zip(alphas_before, net.arch_parameters()))
    assert any(not torch.equal(b, w.detach()) for b, w in zip(weights_before, net.weight_parameters()))


@pytest.mark.parametrize("name", STRATEGIES)
def test_state_dict_round_trip_continues_identically(name):
    net, strategy, opt, ctx, (tb, vb) = setup(name)
    strategy.arch_step(tb, vb, ctx)
    # the loop checkpoints the RNG state too: stochastic strategies (GDAS) must continue identically
    state = copy.deepcopy({"net": net.state_dict(), "strategy": strategy.state_dict()})
    rng = torch.random.get_rng_state()
    strategy.arch_step(tb, vb, ctx)
    expected = snapshot(net.arch_parameters())

    net2, strategy2, _, ctx2, _ = setup(name, seed=1)
    net2.load_state_dict(state["net"])
    strategy2.load_state_dict(state["strategy"])
    torch.random.set_rng_state(rng)
    strategy2.arch_step(tb, vb, ctx2)
    for a, b in zip(expected, net2.arch_parameters()):
        assert torch.allclose(a, b.detach(), atol=1e-7)


def test_second_order_differs_from_first_order():
    outs = []
    for name in ("darts", "darts2"):
        net, strategy, opt, ctx, (tb, vb) = setup(name)
        strategy.arch_step(tb, vb, ctx)
        outs.append(torch.cat([a.detach().flatten() for a in net.arch_parameters()]))
    assert not torch.allclose(outs[0], outs[1])


def test_unknown_strategy():
    from pflnas.errors import ConfigError

    with pytest.raises(ConfigError, match="available"):
        create_strategy("magic", ArchOptimConfig())
