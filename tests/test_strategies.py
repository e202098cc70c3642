"""Strategy contract, run for every registered strategy."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pflnas.arch.record import load_architecture, save_architecture
from pflnas.config.search import ArchOptimConfig
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
    for before, p in zip(weights_before, net.weight_parameters()):
        assert torch.equal(before, p.detach())  # bitwise: second order restores from a copy
        assert p.grad is None
    changed = [not torch.equal(b, a.detach()) for b, a in zip(alphas_before, net.arch_parameters())]
    if strategy.updates_alphas:
        assert torch.isfinite(logs["arch_loss"])
        assert all(changed)
    else:  # path-sampling one-shot strategies (SPOS) leave every parameter as it was
        assert not any(changed)


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


@pytest.mark.parametrize("name", STRATEGIES)
def test_export_is_a_valid_found_json(name, tmp_path):
    net, strategy, opt, ctx, (tb, vb) = setup(name)
    strategy.arch_step(tb, vb, ctx)
    arch = strategy.export({"strategy": name, "seed": 0})
    path = save_architecture(arch, tmp_path / "found.json")
    loaded = load_architecture(path)  # validated against the space on load
    assert loaded.to_dict() == arch.to_dict()
    assert loaded.decisions() and all(d.op in arch.space.ops for d in loaded.decisions())


# A few architecture and weight steps of every strategy from one seed, printed as found.json text.
_FRESH = """
import json, sys, torch, torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
from test_strategies import setup
from pflnas.strategies import list_strategies
torch.set_num_threads(1)
out = {}
for name in list_strategies():
    net, strategy, opt, ctx, (tb, vb) = setup(name, seed=7)
    for _ in range(3):
        strategy.arch_step(tb, vb, ctx)
        opt.zero_grad(set_to_none=True)
        ctx.loss(tb).backward()
        opt.step()
    out[name] = strategy.export({"seed": 7}).to_dict()
print(json.dumps(out, sort_keys=True))
"""


def test_same_seed_same_found_json_in_a_fresh_process():
    here = str(Path(__file__).parent)
    runs = [
        subprocess.run(
            [sys.executable, "-c", _FRESH, here], capture_output=True, text=True, check=True, timeout=300
        ).stdout
        for _ in range(2)
    ]
    first = json.loads(runs[0])
    assert set(first) == set(STRATEGIES)
    assert runs[0] == runs[1]
