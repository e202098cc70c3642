"""The architecture-step contract: strategies compute α gradients, the step body reduces, checks and lets
them apply; a dropped batch is a return value, and the architecture objective is the loop's to compose."""

import pytest
import torch
import torch.nn.functional as F

from pflnas.config.search import ArchOptimConfig
from pflnas.spaces import load_space
from pflnas.strategies import StepContext, create_strategy, list_strategies
from pflnas.supernet import build_supernet
from pflnas.train.search_step import SearchStep, sgd_virtual_step


def _setup(name):
    torch.manual_seed(0)
    space = load_space("cell_v1").replace(init_channels=4, layers=3)
    strategy = create_strategy(name, ArchOptimConfig(lr=0.01))
    net = build_supernet(space, 10, **strategy.supernet_options())
    strategy.attach(net)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9)
    batches = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))) for _ in range(2)]
    return net, strategy, opt, batches


@pytest.mark.parametrize("name", list_strategies())
def test_arch_grads_change_no_parameter_and_no_grad(name):
    net, strategy, opt, (tb, vb) = _setup(name)
    loss = lambda b: F.cross_entropy(net(b[0]), b[1])  # noqa: E731
    before = [p.detach().clone() for p in net.parameters()]
    arch = strategy.arch_grads(tb, vb, StepContext(loss, sgd_virtual_step(opt), lr=0.05))
    assert all(torch.equal(b, p.detach()) for b, p in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters())
    if strategy.updates_alphas:
        assert arch is not None and len(arch.grads) == len(net.arch_parameters())
    else:
        assert arch is None


def test_the_objective_is_called_on_the_held_out_batch_only():
    """darts2 calls the architecture objective once, on the held-out batch; its training-batch calls (the
    virtual step, the Hessian term) take the plain loss: the loop decides, no batch identity is tested."""
    net, strategy, opt, (tb, vb) = _setup("darts2")
    calls = []

    def loss(batch):
        calls.append(("loss", batch is tb))
        return F.cross_entropy(net(batch[0]), batch[1])

    def arch_loss(batch):
        calls.append(("arch_loss", batch is vb))
        return F.cross_entropy(net(batch[0]), batch[1])

    strategy.arch_grads(tb, vb, StepContext(loss, sgd_virtual_step(opt), lr=0.05, arch_loss=arch_loss))
    assert calls == [("loss", True), ("arch_loss", True), ("loss", True), ("loss", True)]


def test_a_nan_alpha_gradient_drops_the_batch_without_an_exception_or_an_update():
    net, strategy, opt, (tb, vb) = _setup("darts")
    applied = []
    strategy.apply_arch_grads = lambda: applied.append(True)  # type: ignore[method-assign]
    checked = []

    def check_arch(arch):
        checked.append(arch)
        return all(bool(torch.isfinite(g).all()) for g in arch.grads)

    body = SearchStep(net, strategy, opt, net.weight_parameters(), grad_clip=5.0, check_arch=check_arch)
    nan = lambda b: body.loss(b) * float("nan")  # noqa: E731
    before = [p.detach().clone() for p in net.parameters()]
    out = body(tb, vb, StepContext(body.loss, sgd_virtual_step(opt), lr=0.05, arch_loss=nan), True)
    assert out is None and len(checked) == 1 and not applied
    assert all(torch.equal(b, p.detach()) for b, p in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters())
