"""Every space's supernet on a tiny config: forward/backward, parameter split, sharing equivalence."""

import pytest
import torch
from _spaces import tiny

from pflnas.arch.derive import derive_architecture
from pflnas.spaces import list_spaces, load_space
from pflnas.supernet import build_supernet

CELL_SPACES = [n for n in list_spaces() if not load_space(n).is_block]


@pytest.mark.parametrize("name", list_spaces())
@pytest.mark.parametrize("alpha_mode", ["individual", "shared"])
def test_forward_backward(name, alpha_mode):
    space = tiny(name).replace(alpha_mode=alpha_mode)
    net = build_supernet(space, num_classes=10, image_size=16)
    y = net(torch.randn(2, 3, 16, 16))
    assert y.shape == (2, 10)
    y.logsumexp(1).sum().backward()
    labels = [label for label, _ in net.named_arch_parameters()]
    assert len(labels) == len(space.alpha_groups()) * len(space.choice_keys())
    assert all(p.grad is not None for p in net.arch_parameters())
    # arch and weight parameters partition the model's parameters
    arch_ids = {id(p) for p in net.arch_parameters()}
    weight_ids = {id(p) for p in net.weight_parameters()}
    assert not arch_ids & weight_ids
    assert arch_ids | weight_ids == {id(p) for p in net.parameters()}
    # labels are readable and in the state_dict
    assert all(f"arch.{label}" in net.state_dict() for label in labels)
    probs = net.probabilities()
    arch = derive_architecture(space, probs)
    assert len(arch.blocks if space.is_block else arch.cells) == len(space.alpha_groups())
    assert all(abs(sum(d.values()) - 1) < 1e-5 for d in probs.values())


@pytest.mark.parametrize("name", CELL_SPACES)
def test_sharing_param_free_ops_is_exact(name):
    space = tiny(name)
    torch.manual_seed(0)
    shared = build_supernet(space, 10, share_param_free=True)
    torch.manual_seed(0)
    separate = build_supernet(space, 10, share_param_free=False)
    missing, unexpected = separate.load_state_dict(shared.state_dict(), strict=False)
    assert all(".source_ops." in k for k in unexpected)  # only the shared pooling-BN buffers
    assert all(".own_free." in k for k in missing)
    x = torch.randn(2, 3, 16, 16)
    y1, y2 = shared(x), separate(x)
    assert torch.allclose(y1, y2, atol=1e-6)
    y1.sum().backward()
    y2.sum().backward()
    for (label, a), (_, b) in zip(shared.named_arch_parameters(), separate.named_arch_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), label
    # sharing removes modules: fewer pooling layers
    pools = lambda m: sum(isinstance(x, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)) for x in m.modules())  # noqa: E731
    if any("pool" in op for op in space.ops):
        assert pools(shared) < pools(separate)


def test_arch_weights_follow_device_and_dtype():
    net = build_supernet(tiny("cell_v1"), 10).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in net.arch_parameters())
