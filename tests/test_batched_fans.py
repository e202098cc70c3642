"""The batched layout's fans (BATCHED_FORMAT 3): which sources stack, and the converter rules of the tensors
they join, checked block by block against the per_source state written out by hand, with distinct values in
every tensor (fresh BatchNorms hold only zeros and ones, which would hide a block in the wrong place)."""

from __future__ import annotations

import pytest
import torch
from _batched import float64, gap
from _spaces import tiny

from pflnas.supernet import build_supernet
from pflnas.supernet.batched import BatchedNodes, fan_groups
from pflnas.supernet.layouts import from_batched, to_batched

pytestmark = pytest.mark.usefixtures(float64.__name__)

# the per-edge module of each candidate's final BatchNorm (it joins the fan's one BatchNorm)
FINAL_BN = {"conv_3x3": "2", "dw_conv_3x3": "1.3", "sep_conv_3x3": "1.3", "sep_conv_5x5": "1.3"}
FINAL_BN |= {"dil_conv_3x3": "3", "dil_conv_5x5": "3"}
WIDE = {
    "cell_v1": ["conv_3x3", "dw_conv_3x3"],
    "darts": ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"],
}


def _distinct(net: torch.nn.Module) -> None:
    """Every float tensor of ``net``'s state set to values found nowhere else; every BatchNorm counter to 7
    (one forward updates them all alike, so a joined BatchNorm keeps one)."""
    with torch.no_grad():
        start = 1.0
        for key, value in net.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.arange(start, start + value.numel()).view_as(value))
                start += value.numel()
            elif key.endswith("num_batches_tracked"):
                value.fill_(7)


def test_cell_inputs_stack_and_nodes_run_alone():
    assert fan_groups({0: [0, 2], 1: [1, 3], 2: [4]}, {0: 1, 1: 1, 2: 1}, [2, 3]) == [(0, 1), (2,)]
    # inputs of another stride or number of edges keep their own fans
    assert fan_groups({0: [0, 2], 1: [1, 3]}, {0: 2, 1: 1}, [2, 3]) == [(0,), (1,)]
    assert fan_groups({0: [0], 1: [1, 2]}, {0: 1, 1: 1}, [2]) == [(0,), (1,)]
    darts = build_supernet(tiny("darts"), 10, layout="batched")
    assert all(list(c.batched.fans) == ["0_1", "2", "3", "4"] for c in darts.cells)
    nb201 = [c for c in build_supernet(tiny("nb201"), 10, layout="batched").cells if hasattr(c, "batched")]
    assert all(list(c.batched.fans) == ["0", "1", "2"] for c in nb201)


@pytest.mark.parametrize("name", ["cell_v1", "darts"])
def test_stacked_fan_joins_edges_then_sources(name):
    """Cell 0's input fan: a wide conv holds s0's edges' weights then s1's; the fan's BatchNorm holds every
    wide op's final BatchNorm edge by edge, then every pooling BN source by source."""
    ref = build_supernet(tiny(name), 10, layout="per_source")
    _distinct(ref)
    batched = build_supernet(tiny(name), 10, layout="batched")
    batched.load_state_dict(to_batched(ref.state_dict(), batched))
    want, got = ref.state_dict(), batched.state_dict()
    nodes = batched.cells[0].batched
    assert isinstance(nodes, BatchedNodes)
    edges = [
        f"cells.0.edges.edge{n}<-{s}.trainable" for s in (0, 1) for n, src in tiny(name).edges() if src == s
    ]
    assert nodes.fan_edges["0_1"] == [i for s in (0, 1) for i in nodes.out_edges[s]]
    fan = "cells.0.batched.fans.0_1"
    op = WIDE[name][0]
    conv = ("conv", "1") if op == "conv_3x3" else ("first.dw", "0.1")  # dense conv (groups=2) or depthwise
    joined = torch.cat([want[f"{e}.{op}.{conv[1]}.weight"] for e in edges])
    assert torch.equal(got[f"{fan}.wide.{op}.{conv[0]}.weight"], joined)
    for buf in ("running_mean", "running_var"):
        blocks = [want[f"{e}.{op}.{FINAL_BN[op]}.{buf}"] for op in WIDE[name] for e in edges]
        blocks += [
            want[f"cells.0.source_ops.{s}.ops.{p}.1.{buf}"]
            for p in ("max_pool_3x3", "avg_pool_3x3")
            for s in (0, 1)
        ]
        assert torch.equal(got[f"{fan}.bn.{buf}"], torch.cat(blocks))
    assert got[f"{fan}.bn.num_batches_tracked"].item() == 7
    assert gap(from_batched(got, batched), want) == 0.0


@pytest.mark.parametrize("name", ["darts", "cell_v1", "nb201"])
def test_distinct_states_round_trip_through_per_edge(name):
    """Batched -> per_edge (every edge its copy of its source's pooling BNs) -> batched is the identity, for
    states whose every block differs."""
    batched = build_supernet(tiny(name), 10, layout="batched")
    _distinct(batched)
    per_edge = build_supernet(tiny(name), 10, layout="per_edge")
    per_edge.load_state_dict(from_batched(batched.state_dict(), batched, "per_edge"))  # strict: every key
    assert gap(to_batched(per_edge.state_dict(), batched), batched.state_dict()) == 0.0
