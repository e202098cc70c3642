"""PC-DARTS: partial channel connections with channel shuffle, edge normalisation, warm-up."""

import pytest
import torch
from _spaces import tiny

from pflnas.arch.derive import derive_architecture
from pflnas.errors import ConfigError
from pflnas.spaces import load_space
from pflnas.supernet import build_supernet
from pflnas.supernet.mixed import MixedEdge, channel_shuffle

OPS = ["conv_3x3", "dw_conv_3x3", "max_pool_3x3", "avg_pool_3x3", "skip_connect"]


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_edge_runs_ops_on_a_quarter_of_the_channels(stride):
    edge = MixedEdge(OPS, 16, stride, pool_bn=True, shared=False, partial=4)
    full = MixedEdge(OPS, 16, stride, pool_bn=True, shared=False)
    assert edge.trainable["conv_3x3"][1].in_channels == 4
    assert sum(p.numel() for p in edge.parameters()) < sum(p.numel() for p in full.parameters()) / 4
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    w = torch.softmax(torch.randn(len(OPS)), 0)
    y = edge(x, w)
    assert y.shape == (2, 16, 8 // stride, 8 // stride)
    # the bypassed 12 channels reach the output unchanged at stride 1 (every 4th channel is processed)
    if stride == 1:
        back = channel_shuffle(y, 4)  # shuffling with 4 groups twice over 16 channels is the identity here
        assert torch.allclose(channel_shuffle(back, 4), y)
        unshuffled = y.view(2, 4, 4, 8, 8).transpose(1, 2).reshape(2, 16, 8, 8)
        assert torch.equal(unshuffled[:, 4:], x[:, 4:])


def test_edge_norm_supernet_and_sharing():
    space = tiny("cell_v1")
    torch.manual_seed(0)
    shared = build_supernet(space, 10, share_param_free=True, partial_channels=4, edge_norm=True)
    torch.manual_seed(0)
    separate = build_supernet(space, 10, share_param_free=False, partial_channels=4, edge_norm=True)
    separate.load_state_dict(shared.state_dict(), strict=False)
    x = torch.randn(2, 3, 16, 16)
    y1, y2 = shared(x), separate(x)
    assert torch.allclose(y1, y2, atol=1e-6)
    y1.sum().backward()
    extra = len(shared.arch_parameters()) - len(list(shared.named_arch_parameters()))
    assert extra == len(space.alpha_groups()) * space.nodes  # one edge-weight vector per node and group
    assert all(p.grad is not None for p in shared.arch_parameters())
    weight_ids = {id(p) for p in shared.weight_parameters()}
    assert not weight_ids & {id(p) for p in shared.arch_parameters()}
    strengths = shared.edge_strengths()
    assert abs(sum(v for k, v in strengths.items() if k.startswith("cell0.edge2<-")) - 1) < 1e-6


def test_edge_weights_decide_the_kept_edges():
    space = load_space("cell_v1").replace(init_channels=4, layers=3)
    probs = {
        f"{g}.edge{n}<-{s}": dict.fromkeys(space.ops, 0.2)
        for g, _ in space.alpha_groups()
        for n, s in space.edges()
    }
    for g, _ in space.alpha_groups():
        probs[f"{g}.edge2<-0"] = {**dict.fromkeys(space.ops, 0.1), "conv_3x3": 0.6}
    plain = derive_architecture(space, probs)
    assert {e.source for e in plain.cells[0].edges if e.node == 2} == {0, 1}
    scale = {f"{g}.edge{n}<-{s}": 1.0 for g, _ in space.alpha_groups() for n, s in space.edges()}
    scale["cell0.edge5<-0"] = 0.1  # node 5 drops its edge from node 0 for the next strongest
    scale["cell0.edge5<-4"] = 5.0
    scaled = derive_architecture(space, probs, edge_scale=scale)
    assert {e.source for e in scaled.cells[0].edges if e.node == 5} == {1, 4}


def test_pcdarts_needs_a_cell_space_and_divisible_channels(tmp_path, capsys):
    with pytest.raises(ConfigError, match="cell spaces"):
        build_supernet(tiny("resnet50_block"), 10, image_size=32, partial_channels=4)
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_supernet(load_space("cell_v1").replace(init_channels=6, layers=3), 10, partial_channels=4)
