"""A grouped PC-DARTS supernet of N seeds computes exactly what N separate per_source PC-DARTS supernets
compute (float64, 1e-10), for K=2 and K=4 partial channels with edge normalisation: outputs, weight, alpha and
edge-normalisation gradients, BatchNorm statistics, the converters, three pcdarts strategy steps and the
architectures they derive with their edge strengths; what it refuses."""

from __future__ import annotations

import pytest
import torch
from _batched import TOL, float64, gap, grads, per_seed_gap
from _spaces import tiny
from torch import nn

from pflnas.arch.derive import derive_architecture
from pflnas.config.search import ArchOptimConfig
from pflnas.errors import ConfigError
from pflnas.strategies import StepContext, create_strategy
from pflnas.supernet import build_supernet
from pflnas.supernet.grouped import GroupedSupernet
from pflnas.supernet.grouped_state import (
    from_grouped,
    seed_probabilities,
    seed_strengths,
    to_grouped,
)
from pflnas.supernet.network import softmax_mixing

SPACES = ["cell_v1", "darts"]
PARTIAL = [2, 4]  # tiny spaces: 4 channels; K=4 leaves 1 channel in normal cells, 2 and 4 in reduction cells
SEEDS = 3

pytestmark = pytest.mark.usefixtures(float64.__name__)


def _build(name: str, partial: int):
    return build_supernet(tiny(name), 10, layout="per_source", partial_channels=partial, edge_norm=True)


def _nets(name: str, partial: int):
    """3 per_source PC-DARTS supernets seeded differently, with N(0, 1) architecture parameters so that the
    edge normalisation matters, and a grouped one holding their numbers."""
    nets = []
    for s in range(SEEDS):
        torch.manual_seed(s)
        net = _build(name, partial)
        with torch.no_grad():
            for p in net.arch_parameters():
                p.normal_()
        nets.append(net)
    torch.manual_seed(99)
    grouped = GroupedSupernet(tiny(name), 10, SEEDS, partial_channels=partial, edge_norm=True)
    grouped.load_state_dict(to_grouped([n.state_dict() for n in nets], grouped))
    return nets, grouped


def _batch(size: int = 16):
    return torch.randn(SEEDS, 4, 3, size, size), torch.randint(0, 10, (SEEDS, 4))


@pytest.mark.parametrize("partial", PARTIAL)
@pytest.mark.parametrize("name", SPACES)
def test_outputs_gradients_and_statistics_agree(name, partial):
    nets, grouped = _nets(name, partial)
    assert any(c.reduction for c in nets[0].cells) and any(not c.reduction for c in nets[0].cells)
    assert grouped.edge_norm is not None and all(c.partial == partial for c in grouped.cells)
    x, y = _batch(15)  # odd: the stride-2 bypass pools with ceil_mode
    logits, separate = grouped(x), [net(x[s]) for s, net in enumerate(nets)]
    assert logits.shape == (SEEDS, 4, 10)
    assert max((logits[s] - out).abs().max().item() for s, out in enumerate(separate)) < TOL
    for s, out in enumerate(separate):
        nn.functional.cross_entropy(out, y[s]).backward()
    sum(nn.functional.cross_entropy(logits[s], y[s]) for s in range(SEEDS)).backward()
    arch = grouped.arch_parameters()
    assert len(arch) == len(nets[0].arch_parameters()) - len(list(nets[0].named_arch_parameters())) + len(
        grouped.arch
    )  # the alphas (one per group) and the betas (one per group and node)
    betas = arch[len(grouped.arch) :]
    assert betas and all(p.grad is not None and p.grad.abs().min() > 0 for p in betas)
    assert per_seed_gap(nets, grouped, grads(grouped)) < TOL  # weight, alpha and beta gradients
    assert per_seed_gap(nets, grouped) < TOL  # BatchNorm running statistics of the two forwards


@pytest.mark.parametrize("partial", PARTIAL)
def test_converters_round_trip(partial):
    nets, grouped = _nets("darts", partial)
    assert any(k.startswith("edge_norm.") for k in grouped.state_dict())
    for net, state in zip(nets, from_grouped(grouped.state_dict(), grouped)):
        assert gap(net.state_dict(), state) == 0.0
        _build("darts", partial).load_state_dict(state)  # strict: every key
    dense = build_supernet(tiny("darts"), 10, layout="per_source").state_dict()  # no edge_norm entries
    with pytest.raises(ConfigError, match="state 0 is not a per_source supernet state.*edge_norm"):
        to_grouped([dense] + [n.state_dict() for n in nets[1:]], grouped)


def _step_context(loss) -> StepContext:
    return StepContext(loss=loss, lr=0.025)


@pytest.mark.parametrize("partial", PARTIAL)
@pytest.mark.parametrize("name", SPACES)
def test_three_pcdarts_steps_agree(name, partial):
    """The pcdarts strategy's architecture step (Adam on the alphas and betas, a held-out batch), then a
    clipped SGD step of the weights; then the same cells with the same edge strengths."""
    nets, grouped = _nets(name, partial)
    before = {k: v.clone() for k, v in grouped.state_dict().items()}
    strategies = [create_strategy("pcdarts", ArchOptimConfig()) for _ in nets]
    for strategy, net in zip(strategies, nets):
        strategy.attach(net)
    g_strategy = create_strategy("pcdarts", ArchOptimConfig())
    g_strategy.attach(grouped)  # type: ignore[arg-type]
    sgds = [torch.optim.SGD(n.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4) for n in nets]
    g_sgd = torch.optim.SGD(grouped.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)

    def separate(net):
        return lambda batch: nn.functional.cross_entropy(net(batch[0]), batch[1])

    def together(batch):
        logits = grouped(batch[0])
        return sum(nn.functional.cross_entropy(logits[s], batch[1][s]) for s in range(SEEDS))

    torch.manual_seed(5)
    for _ in range(3):
        train, val = _batch(), _batch()
        for s, (strategy, net) in enumerate(zip(strategies, nets)):
            strategy.arch_step(
                (train[0][s], train[1][s]), (val[0][s], val[1][s]), _step_context(separate(net))
            )
        g_strategy.arch_step(train, val, _step_context(together))
        for s, (sgd, net) in enumerate(zip(sgds, nets)):
            sgd.zero_grad()
            separate(net)((train[0][s], train[1][s])).backward(inputs=net.weight_parameters())
            nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
            sgd.step()
        g_sgd.zero_grad()
        together(train).backward(inputs=grouped.weight_parameters())
        grouped.clip_weight_grads(5.0)
        g_sgd.step()
    after = grouped.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in after if k.startswith(("arch.", "edge_norm.")))
    assert per_seed_gap(nets, grouped) < TOL  # weights, alphas, betas and BatchNorm statistics
    space = tiny(name)
    for s, (strategy, net) in enumerate(zip(strategies, nets)):
        strengths, ref = seed_strengths(grouped, s), net.edge_strengths()
        assert strengths.keys() == ref.keys() and len(ref) == len(space.edges()) * len(grouped.arch)
        assert max(abs(strengths[k] - w) for k, w in ref.items()) < 1e-6  # float32, as edge_strengths
        found = derive_architecture(space, seed_probabilities(grouped, s), None, strengths)
        assert found.to_dict()["cells"] == strategy.export().to_dict()["cells"]


def test_dense_grouped_has_no_strengths_and_bad_options_fail_in_one_line():
    grouped = GroupedSupernet(tiny("darts"), 10, 2)
    assert grouped.edge_norm is None and seed_strengths(grouped, 1) == {}
    assert len(grouped.arch_parameters()) == len(grouped.arch)
    with pytest.raises(ConfigError, match="out of range"):
        seed_strengths(grouped, 2)
    with pytest.raises(ConfigError, match="divisible by 3") as err:
        GroupedSupernet(tiny("darts"), 10, 2, partial_channels=3, edge_norm=True)
    assert "\n" not in str(err.value)
    grouped.set_mixing(softmax_mixing)
    with pytest.raises(ConfigError, match="softmax only"):
        grouped.set_mixing(lambda a: torch.softmax(a / 2, dim=-1))
    with pytest.raises(ConfigError, match="softmax only"):
        grouped.set_mixing(softmax_mixing, single_path=True)
    with pytest.raises(ConfigError, match="softmax only"):
        create_strategy("gdas", ArchOptimConfig()).attach(grouped)  # type: ignore[arg-type]
