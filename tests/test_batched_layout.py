"""The batched supernet layout computes exactly what the per-edge layout computes (float64, 1e-10): outputs,
weight and alpha gradients, three first-order DARTS steps; the converters; what refuses it; resume."""

from __future__ import annotations

import json
import signal

import pytest
import torch
import yaml
from _batched import TOL, batches, float64, gap, grads, pair, search_steps
from _spaces import tiny
from _tiny_runs import Launcher, search_argv, tiny_archive

from pflnas.arch.derive import derive_architecture
from pflnas.config.build import build_search_config
from pflnas.config.search import ArchOptimConfig
from pflnas.errors import ConfigError
from pflnas.strategies import create_strategy, list_strategies
from pflnas.supernet import build_supernet
from pflnas.supernet.cells import DartsSearchCell
from pflnas.supernet.layouts import from_batched, to_batched

SPACES = ["cell_v1", "darts"]

pytestmark = pytest.mark.usefixtures(float64.__name__)


@pytest.mark.parametrize("layout", ["per_edge", "per_source"])
@pytest.mark.parametrize("name", SPACES)
def test_outputs_and_gradients_agree(name, layout):
    ref, batched = pair(tiny(name), layout)
    assert any(c.reduction for c in batched.cells) and any(not c.reduction for c in batched.cells)
    x = torch.randn(4, 3, 16, 16)
    y_ref, y_bat = ref(x), batched(x)
    assert (y_ref - y_bat).abs().max() < TOL
    y_ref.square().sum().backward()
    y_bat.square().sum().backward()
    for a, b in zip(ref.arch_parameters(), batched.arch_parameters()):
        assert (a.grad - b.grad).abs().max() < TOL
    assert gap(to_batched(grads(ref), batched), grads(batched)) < TOL
    # the BatchNorm running statistics of the forward pass
    assert gap(to_batched(ref.state_dict(), batched), batched.state_dict()) < TOL


@pytest.mark.parametrize("name", SPACES)
def test_channels_last_agrees(name):
    """channels_last (the GPU path's memory format) reaches the batched reshapes and views: same outputs and
    alpha gradients as the per-edge layout in the default format."""
    ref, batched = pair(tiny(name))
    batched = batched.to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 16, 16)
    y_ref, y_bat = ref(x), batched(x.contiguous(memory_format=torch.channels_last))
    assert (y_ref - y_bat).abs().max() < TOL
    y_ref.square().sum().backward()
    y_bat.square().sum().backward()
    for a, b in zip(ref.arch_parameters(), batched.arch_parameters()):
        assert (a.grad - b.grad).abs().max() < TOL


@pytest.mark.parametrize("reduction", [False, True])
def test_one_cell_at_stride_one_and_two(reduction):
    space = tiny("darts")
    torch.manual_seed(0)
    cell = DartsSearchCell(space, 6, 6, 4, reduction, False, share=False)
    batched = DartsSearchCell(space, 6, 6, 4, reduction, False, share=True, batched=True)
    state = {f"cells.0.{k}": v for k, v in cell.state_dict().items()}
    wrap = torch.nn.Module()
    wrap.cells = torch.nn.ModuleList([batched])
    wrap.layout = "batched"
    converted = to_batched(state, wrap)  # type: ignore[arg-type]
    batched.load_state_dict({k.removeprefix("cells.0."): v for k, v in converted.items()})
    s0, s1 = torch.randn(2, 6, 8, 8, requires_grad=True), torch.randn(2, 6, 8, 8)
    w = torch.softmax(torch.randn(len(space.edges()), len(space.ops)), -1).requires_grad_()
    y1, y2 = cell(s0, s1, w), batched(s0, s1, w)
    assert y1.shape == y2.shape == (2, 4 * space.nodes, 4 if reduction else 8, 4 if reduction else 8)
    assert (y1 - y2).abs().max() < TOL
    g1 = torch.autograd.grad(y1.square().sum(), [w, s0])
    g2 = torch.autograd.grad(y2.square().sum(), [w, s0])
    assert all((a - b).abs().max() < TOL for a, b in zip(g1, g2))


def test_converters_round_trip():
    ref, batched = pair(tiny("darts"))
    for layout in ("per_edge", "per_source"):
        other = build_supernet(tiny("darts"), 10, layout=layout)
        other.load_state_dict(from_batched(batched.state_dict(), batched, layout))  # strict: every key
    back = from_batched(batched.state_dict(), batched, "per_edge")
    assert gap(back, ref.state_dict()) == 0.0
    with pytest.raises(ConfigError, match="batched layout"):
        to_batched(ref.state_dict(), ref)


@pytest.mark.parametrize(
    ("name", "strategy", "steps"), [("cell_v1", "darts", 3), ("darts", "darts", 3), ("darts", "darts2", 1)]
)
def test_darts_steps_agree(name, strategy, steps):
    """Three first-order steps (one second-order: it runs the supernet four times per architecture step)."""
    ref, batched = pair(tiny(name))
    data = batches(steps)
    search_steps(ref, data, strategy)
    search_steps(batched, data, strategy)
    # weights, alphas and BatchNorm running statistics (all in the state_dict)
    assert gap(to_batched(ref.state_dict(), batched), batched.state_dict()) < TOL
    space = tiny(name)
    found_ref = derive_architecture(space, ref.probabilities()).to_dict()
    found_bat = derive_architecture(space, batched.probabilities()).to_dict()
    assert found_ref["cells"] == found_bat["cells"]


@pytest.mark.parametrize("name", list_strategies())
def test_every_strategy_runs_some_layout_for_batched(name):
    """Dense strategies run batched; single-path ones (one op per edge: nothing to batch) run per source,
    which keeps their optimizer exact (an edge off the path is not stepped)."""
    strategy = create_strategy(name, ArchOptimConfig())
    layout = strategy.layout_for("batched")
    assert layout in strategy.layouts
    assert layout == ("per_source" if strategy.dynamic_path else "batched")
    assert strategy.layout_for("per_edge") == "per_edge"


@pytest.mark.slow
def test_gdas_on_batched_runs_per_source(tmp_path, session_cache):
    source = tiny_archive(tmp_path / "data")
    launcher, env = Launcher(), {"PFLNAS_CACHE": session_cache, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    argv = search_argv(source, run, 1, "space.layout=batched", "strategy.name=gdas", "data.subset=32")
    proc = launcher.start(argv, env, tmp_path / "log")
    proc.join(300)
    assert proc.exitcode == 0, (tmp_path / "log").read_text()
    assert torch.load(run / "checkpoint.pt", weights_only=True)["layout"] == "per_source"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["resolved_layout"] == "per_source"
    assert config["space"]["layout"] == "batched"  # what was asked stays
    assert json.loads((run / "found.json").read_text())["cells"]


def test_bad_layouts_fail_in_one_line():
    with pytest.raises(ConfigError, match="space.layout must be one of per_edge, per_source, batched"):
        build_search_config(sets=["space.layout=wide"])
    with pytest.raises(ConfigError, match="for cell spaces"):
        build_supernet(tiny("resnet50_block"), 10, layout="batched")
    with pytest.raises(ConfigError, match="contradicts"):
        build_supernet(tiny("darts"), 10, share_param_free=False, layout="batched")


def test_default_layout_is_per_source():
    assert build_supernet(tiny("darts"), 10).layout == "per_source"
    assert build_supernet(tiny("darts"), 10, share_param_free=False).layout == "per_edge"


@pytest.mark.slow
def test_batched_search_resumes_exactly(tmp_path, session_cache):
    """A batched search stopped after its first epoch and resumed ends as the uninterrupted one."""
    source = tiny_archive(tmp_path / "data")
    launcher, env = Launcher(), {"PFLNAS_CACHE": session_cache, "OMP_NUM_THREADS": "1"}
    sets = ("space.layout=batched", "data.subset=32")
    full, cut = tmp_path / "full", tmp_path / "cut"
    for argv, kw, code in [
        (search_argv(source, full, 2, *sets), {}, 0),
        (search_argv(source, cut, 2, *sets), {"signal_at": (signal.SIGTERM, 1, 0)}, 143),
        (["search", "--resume", str(cut)], {}, 0),
    ]:
        proc = launcher.start(argv, env, tmp_path / "log", **kw)
        proc.join(300)
        assert proc.exitcode == code, (tmp_path / "log").read_text()
    saved = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert saved["layout"] == "batched"
    found = [json.loads((run / "found.json").read_text()) for run in (full, cut)]
    assert found[0]["cells"] == found[1]["cells"]
    assert found[0]["probabilities"] == found[1]["probabilities"]
    # a checkpoint of the first batched engine (interleaved depthwise weights) is refused in one line
    saved["batched_format"] = 1
    saved["epoch"] = 0
    torch.save(saved, cut / "checkpoint.pt")
    proc = launcher.start(["search", "--resume", str(cut)], env, tmp_path / "log2")
    proc.join(300)
    assert proc.exitcode == 2
    assert "older batched layout" in (tmp_path / "log2").read_text()
    assert "Traceback" not in (tmp_path / "log2").read_text()
