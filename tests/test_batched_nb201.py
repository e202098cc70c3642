"""NAS-Bench-201 supernets in the batched layout compute exactly what the per-edge layout computes (float64,
1e-10): outputs, weight and alpha gradients, the converters, three DARTS and second-order DARTS steps; block
spaces still refuse the layout in one line."""

from __future__ import annotations

import pytest
import torch
from _batched import TOL, batches, float64, gap, grads, pair, search_steps
from _spaces import tiny

from pflnas.arch.derive import derive_architecture
from pflnas.errors import ConfigError
from pflnas.supernet import build_supernet
from pflnas.supernet.cells import NB201SearchCell
from pflnas.supernet.layouts import from_batched, to_batched

pytestmark = pytest.mark.usefixtures(float64.__name__)


@pytest.mark.parametrize("layout", ["per_edge", "per_source"])
def test_outputs_and_gradients_agree(layout):
    ref, batched = pair(tiny("nb201"), layout)
    cells = [c for c in batched.cells if isinstance(c, NB201SearchCell)]
    assert len(cells) == 3 and all(c.batched is not None and not c.edges for c in cells)
    x = torch.randn(4, 3, 16, 16)
    y_ref, y_bat = ref(x), batched(x)
    assert (y_ref - y_bat).abs().max() < TOL
    y_ref.square().sum().backward()
    y_bat.square().sum().backward()
    for a, b in zip(ref.arch_parameters(), batched.arch_parameters()):
        assert (a.grad - b.grad).abs().max() < TOL
    assert gap(to_batched(grads(ref), batched), grads(batched)) < TOL
    assert gap(to_batched(ref.state_dict(), batched), batched.state_dict()) < TOL  # BN running statistics


def test_converters_round_trip():
    ref, batched = pair(tiny("nb201"))
    wide = [k for k in batched.state_dict() if ".wide." in k]
    assert any("conv_3x3.conv.weight" in k for k in wide)
    # the candidates' final BatchNorms are one per fan (BATCHED_FORMAT 3)
    assert any(k.endswith(".batched.fans.0.bn.running_var") for k in batched.state_dict())
    for layout in ("per_edge", "per_source"):
        other = build_supernet(tiny("nb201"), 10, layout=layout)
        other.load_state_dict(from_batched(batched.state_dict(), batched, layout))  # strict: every key
    assert gap(from_batched(batched.state_dict(), batched, "per_edge"), ref.state_dict()) == 0.0
    assert gap(to_batched(from_batched(batched.state_dict(), batched), batched), batched.state_dict()) == 0.0


@pytest.mark.parametrize("strategy", ["darts", "darts2"])
def test_search_steps_agree(strategy):
    ref, batched = pair(tiny("nb201"))
    steps = batches(3)
    search_steps(ref, steps, strategy)
    search_steps(batched, steps, strategy)
    # weights, alphas and BatchNorm running statistics (all in the state_dict)
    assert gap(to_batched(ref.state_dict(), batched), batched.state_dict()) < TOL
    space = tiny("nb201")
    found_ref = derive_architecture(space, ref.probabilities()).to_dict()
    found_bat = derive_architecture(space, batched.probabilities()).to_dict()
    assert found_ref["cells"] == found_bat["cells"]


def test_block_spaces_refuse_batched_in_one_line():
    with pytest.raises(ConfigError, match="is for cell spaces") as err:
        build_supernet(tiny("resnet50_block"), 10, layout="batched")
    assert "\n" not in str(err.value)
