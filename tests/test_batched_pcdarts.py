"""PC-DARTS on the batched layout computes exactly what it computes on the per-edge layout (float64, 1e-10):
outputs, weight, alpha and edge-normalisation gradients, BatchNorm statistics, three pcdarts search steps and
the architecture they derive; one cell at stride 1 and 2; the converters; a tiny CLI search."""

from __future__ import annotations

import json

import pytest
import torch
from _batched import TOL, batches, float64, gap, grads, pair, search_steps
from _spaces import tiny
from _tiny_runs import Launcher, search_argv, tiny_archive

from pflnas.errors import ConfigError
from pflnas.supernet import build_supernet
from pflnas.supernet.batched import reassemble
from pflnas.supernet.cells import DartsSearchCell
from pflnas.supernet.layouts import from_batched, to_batched
from pflnas.supernet.mixed import MixedEdge

PARTIAL = [2, 4]  # tiny darts: 4 channels; K=4 leaves 1 channel in normal cells, 2 and 4 in reduction cells

pytestmark = pytest.mark.usefixtures(float64.__name__)


def _pair(partial: int, layout: str = "per_edge"):
    """A PC-DARTS ``layout`` supernet and a batched one holding the same numbers, with random
    architecture parameters so that edge normalisation matters."""
    return pair(tiny("darts"), layout, randomise_arch=True, partial_channels=partial, edge_norm=True)


@pytest.mark.parametrize(("partial", "layout"), [(2, "per_edge"), (4, "per_edge"), (4, "per_source")])
def test_outputs_and_gradients_agree(partial, layout):
    ref, batched = _pair(partial, layout)
    assert any(c.reduction for c in batched.cells) and any(not c.reduction for c in batched.cells)
    assert batched.edge_norm is not None and all(c.batched.partial == partial for c in batched.cells)
    x = torch.randn(4, 3, 16, 16)
    y_ref, y_bat = ref(x), batched(x)
    assert (y_ref - y_bat).abs().max() < TOL
    y_ref.square().sum().backward()
    y_bat.square().sum().backward()
    arch_ref, arch_bat = ref.arch_parameters(), batched.arch_parameters()
    assert len(arch_ref) == len(arch_bat) > len(list(ref.named_arch_parameters()))  # alphas and betas
    for a, b in zip(arch_ref, arch_bat):
        assert a.grad.abs().max() > 0 and (a.grad - b.grad).abs().max() < TOL
    assert gap(to_batched(grads(ref), batched), grads(batched)) < TOL
    # the BatchNorm running statistics of the forward pass
    assert gap(to_batched(ref.state_dict(), batched), batched.state_dict()) < TOL


@pytest.mark.parametrize("partial", PARTIAL)
@pytest.mark.parametrize("reduction", [False, True])
def test_one_cell_at_stride_one_and_two(reduction, partial):
    space = tiny("darts")
    torch.manual_seed(0)
    cell = DartsSearchCell(space, 6, 6, 8, reduction, False, share=False, partial=partial)
    batched = DartsSearchCell(space, 6, 6, 8, reduction, False, share=True, partial=partial, batched=True)
    state = {f"cells.0.{k}": v for k, v in cell.state_dict().items()}
    wrap = torch.nn.Module()
    wrap.cells = torch.nn.ModuleList([batched])
    wrap.layout = "batched"
    converted = to_batched(state, wrap)  # type: ignore[arg-type]
    batched.load_state_dict({k.removeprefix("cells.0."): v for k, v in converted.items()})
    s0, s1 = torch.randn(2, 6, 7, 7, requires_grad=True), torch.randn(2, 6, 7, 7)  # odd: ceil_mode pooling
    w = torch.softmax(torch.randn(len(space.edges()), len(space.ops)), -1).requires_grad_()
    y1, y2 = cell(s0, s1, w), batched(s0, s1, w)
    assert y1.shape == y2.shape == (2, 8 * space.nodes, 4 if reduction else 7, 4 if reduction else 7)
    assert (y1 - y2).abs().max() < TOL
    g1 = torch.autograd.grad(y1.square().sum(), [w, s0])
    g2 = torch.autograd.grad(y2.square().sum(), [w, s0])
    assert all((a - b).abs().max() < TOL for a, b in zip(g1, g2))


@pytest.mark.parametrize("stride", [1, 2])
def test_reassemble_is_every_edges_reassembly(stride):
    """One reassembly of m edges' mixes equals m separate ``MixedEdge._reassemble`` calls."""
    edge = MixedEdge(["skip_connect", "max_pool_3x3"], 8, stride, pool_bn=False, shared=True, partial=4)
    x = torch.randn(2, 8, 5, 5)
    size = 3 if stride == 2 else 5
    mixed = torch.randn(2, 3, 2, size, size)
    together = reassemble(x, mixed, 4, stride)
    for j in range(3):
        assert torch.equal(together[:, j], edge._reassemble(x, mixed[:, j]))


@pytest.mark.parametrize("partial", PARTIAL)
def test_pcdarts_steps_agree(partial):
    """Three pcdarts steps (weights and architecture): the same weights, alphas, betas, BatchNorm statistics
    and the same derived cells and edge strengths."""
    ref, batched = _pair(partial)
    before = {k: v.clone() for k, v in batched.state_dict().items()}
    data = batches(3)
    s_ref = search_steps(ref, data, "pcdarts")
    s_bat = search_steps(batched, data, "pcdarts")
    after = batched.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in after if k.startswith(("arch.", "edge_norm.")))
    assert gap(to_batched(ref.state_dict(), batched), after) < TOL
    found_ref, found_bat = s_ref.export().to_dict(), s_bat.export().to_dict()
    assert found_ref["cells"] == found_bat["cells"]
    assert found_ref["provenance"]["edge_normalization"] == found_bat["provenance"]["edge_normalization"]
    assert found_ref["probabilities"] == found_bat["probabilities"]


def test_converters_round_trip_with_partial_channels():
    ref, batched = _pair(2)
    for layout in ("per_edge", "per_source"):
        other = build_supernet(tiny("darts"), 10, layout=layout, partial_channels=2, edge_norm=True)
        other.load_state_dict(from_batched(batched.state_dict(), batched, layout))  # strict: every key
    assert gap(from_batched(batched.state_dict(), batched, "per_edge"), ref.state_dict()) == 0.0


def test_batched_partial_channels_still_checked_in_one_line():
    with pytest.raises(ConfigError, match="divisible by 3") as err:
        build_supernet(tiny("darts"), 10, layout="batched", partial_channels=3, edge_norm=True)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_batched_pcdarts_search_runs(tmp_path, session_cache):
    """The CLI runs a pcdarts search on the batched layout; its checkpoint and found.json say so."""
    source = tiny_archive(tmp_path / "data")
    env = {"PFLNAS_CACHE": session_cache, "OMP_NUM_THREADS": "1"}
    sets = ("space.layout=batched", "strategy.name=pcdarts", "data.subset=32", "strategy.warmup_epochs=1")
    out = tmp_path / "run"
    proc = Launcher().start(search_argv(source, out, 2, *sets), env, tmp_path / "log")
    proc.join(300)
    assert proc.exitcode == 0, (tmp_path / "log").read_text()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["layout"] == "batched"
    found = json.loads((out / "found.json").read_text())
    assert found["cells"] and found["provenance"]["edge_normalization"]
