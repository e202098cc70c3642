"""GDAS: single-path forward (only the sampled op runs), straight-through gradients, temperature schedule."""

import pytest
import torch
import torch.nn.functional as F
from _spaces import tiny

from pflnas.config.search import ArchOptimConfig
from pflnas.strategies import StepContext, create_strategy
from pflnas.strategies.gdas import GDAS
from pflnas.supernet import build_supernet

SPACES = ["cell_v1", "nb201", "darts", "resnet50_block", "vit_s_mixer"]


def _one_hot_of(seed):
    gen = torch.Generator().manual_seed(seed)

    def mix(alphas):
        idx = torch.randint(0, alphas.shape[-1], alphas.shape[:-1], generator=gen)
        hard = F.one_hot(idx, alphas.shape[-1]).to(alphas.dtype)
        soft = torch.softmax(alphas, -1)
        return hard - soft.detach() + soft  # straight-through, valued 0/1

    return mix


# block spaces have no per-source sharing of parameter-free ops: only the shared layout exists for them
LAYOUTS = [(n, share) for n in SPACES for share in (True, False) if share or not tiny(n).is_block]


@pytest.mark.parametrize(("name", "share"), LAYOUTS)
def test_single_path_computes_what_the_dense_mix_computes(name, share):
    torch.manual_seed(0)
    net = build_supernet(tiny(name), 10, share_param_free=share, image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    net.set_mixing(_one_hot_of(3), single_path=False)
    dense = net(x)
    net.set_mixing(_one_hot_of(3), single_path=True)
    sparse = net(x)
    assert torch.allclose(dense, sparse, atol=1e-5)
    sparse.sum().backward()
    assert all(a.grad is not None and torch.isfinite(a.grad).all() for a in net.arch_parameters())


def test_only_the_sampled_op_runs():
    net = build_supernet(tiny("cell_v1"), 10).train()
    ran = []
    for name, module in net.named_modules():
        if name.endswith("trainable.conv_3x3"):
            module.register_forward_hook(lambda m, i, o: ran.append(m))

    def all_pools(alphas):
        hard = torch.zeros_like(alphas)
        hard[..., net.space.ops.index("max_pool_3x3")] = 1.0
        return hard + alphas - alphas.detach()

    net.set_mixing(all_pools, single_path=True)
    net(torch.randn(2, 3, 16, 16))
    assert not ran  # every edge runs max-pool only: no conv is computed
    net.set_mixing(all_pools, single_path=False)
    net(torch.randn(2, 3, 16, 16))
    assert ran  # the dense mix computes every candidate


def test_temperature_and_eval_mode():
    g = GDAS(ArchOptimConfig())
    assert g.temperature(0, 50) == 10.0 and g.temperature(49, 50) == pytest.approx(0.1)
    assert g.temperature(0, 1) == 0.1
    torch.manual_seed(0)
    net = build_supernet(tiny("nb201"), 10)
    strategy = create_strategy("gdas", ArchOptimConfig(lr=0.01))
    strategy.attach(net)
    x = torch.randn(2, 3, 16, 16)
    net.eval()
    assert torch.equal(net(x), net(x))  # argmax path, no noise
    net.train()
    batch = (x, torch.randint(0, 10, (2,)))
    loss = lambda b: F.cross_entropy(net(b[0]), b[1])  # noqa: E731
    logs = strategy.arch_step(batch, batch, StepContext(loss=loss, epoch=5, epochs=11))
    assert float(logs["tau"]) == pytest.approx(5.05) and strategy.state_dict()["tau"] == pytest.approx(5.05)
