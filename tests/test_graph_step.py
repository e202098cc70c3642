"""The CUDA-graph step (``run.cuda_graph``) on CPU: what it refuses, and the pieces that need no GPU.
Capture and replay themselves are checked against eager steps in tests/test_gpu.py (marker ``gpu``)."""

from __future__ import annotations

import importlib

import pytest
import torch

from pflnas.cli.main import main
from pflnas.config.search import ArchOptimConfig
from pflnas.spaces import load_space
from pflnas.strategies import StepContext, create_strategy, list_strategies
from pflnas.supernet import build_supernet
from pflnas.train.graph_step import GraphedStep, make_capturable
from pflnas.train.search_step import SearchStep, sgd_virtual_step

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = [
    "space.init_channels=4",
    "space.layers=3",
    "data.subset=64",
    "data.batch_size=16",
    "run.progress=false",
]


def _search(tmp_path, cifar_source, *sets: str) -> int:
    args = ["search", "--space", "cell_v1", "--data-dir", cifar_source, "--out", str(tmp_path / "run")]
    return main(args + [x for s in (*TINY, *sets) for x in ("--set", s)])


@pytest.mark.parametrize(
    "sets, message",
    [
        (["run.device=cpu"], "needs a CUDA device"),
        (["strategy.name=gdas"], "needs a CUDA device"),  # on CPU the device is named first
    ],
)
def test_refused_before_any_data_loads(tmp_path, capsys, sets, message, monkeypatch):
    monkeypatch.setattr("pflnas.train.search.make_loaders", _no_loaders)
    rc = _search(tmp_path, "/nonexistent", "run.cuda_graph=true", *sets)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "drop run.cuda_graph" in err and len(err.strip().splitlines()) == 1


def _no_loaders(*args, **kwargs):
    raise AssertionError("the refusal must come before the data loads")


@pytest.mark.parametrize("strategy", list_strategies())
def test_dynamic_path_strategies_refused_on_a_gpu_device(tmp_path, strategy):
    """On a CUDA device (given, not touched: the check reads only the config and the strategy), GDAS and
    SPOS are refused because their path changes every step; darts, darts2 and pcdarts pass."""
    from pflnas.config.loader import build_config
    from pflnas.config.search import SearchConfig
    from pflnas.errors import ConfigError
    from pflnas.train.distributed import DistInfo
    from pflnas.train.search import SearchRun

    cfg = build_config(SearchConfig, [], ["run.cuda_graph=true", f"strategy.name={strategy}"])
    run = SearchRun(cfg, tmp_path, DistInfo(0, 1, 0, torch.device("cuda")))
    run.strategy = create_strategy(strategy, cfg.arch)
    if run.strategy.dynamic_path:
        with pytest.raises(ConfigError, match=f"{strategy!r} runs another path every step"):
            run._check_cuda_graph()
    else:
        run._check_cuda_graph()
    # torch.compile runs inside the captured step (compile_forward keeps inductor's own graphs off)
    compiled = build_config(SearchConfig, [], ["run.cuda_graph=true", "run.compile=true"])
    run = SearchRun(compiled, tmp_path, DistInfo(0, 1, 0, torch.device("cuda")))
    run.strategy = create_strategy("darts", cfg.arch)
    run._check_cuda_graph()
    nonfinite_skip = build_config(SearchConfig, [], ["run.cuda_graph=true", "run.nonfinite=skip"])
    run = SearchRun(nonfinite_skip, tmp_path, DistInfo(0, 1, 0, torch.device("cuda")))
    run.strategy = create_strategy("darts", cfg.arch)
    with pytest.raises(ConfigError, match="run.nonfinite=skip"):
        run._check_cuda_graph()


def test_new_body_gets_eager_warmup_steps_when_asked():
    """Under run.compile each new body (a new epoch) starts with an eager step, so torch.compile never
    compiles during a capture; without it only the first body is warmed up."""
    device = torch.device("cuda")  # a device object only: nothing here touches CUDA
    plain = GraphedStep(lambda t, a: {}, [], device, warmup_steps=3)
    compiled = GraphedStep(lambda t, a: {}, [], device, warmup_steps=3, warmup_per_body=1)
    for graphed in (plain, compiled):
        graphed.warmup_left = 0  # as after the first epoch's warm-up
        graphed.set_body(lambda t, a: {})
    assert plain.warmup_left == 0 and compiled.warmup_left == 1
    compiled.warmup_left = 3
    compiled.set_body(lambda t, a: {})
    assert compiled.warmup_left == 3  # never fewer than still owed


def test_graphed_step_needs_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        GraphedStep(lambda t, a: {}, [], torch.device("cpu"))


def test_make_capturable_flags_adam_and_moves_its_step_counts():
    p = torch.nn.Parameter(torch.zeros(3))
    adam = torch.optim.Adam([p], lr=0.1)
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
    p.grad = torch.ones(3)
    adam.step()
    adam.state[p]["step"] = adam.state[p]["step"].double()  # as a non-capturable checkpoint may hold it
    make_capturable([adam, sgd])
    assert all(g["capturable"] for g in adam.param_groups)
    assert adam.state[p]["step"].dtype == torch.float32 and adam.state[p]["step"].item() == 1.0
    assert "capturable" not in sgd.param_groups[0]  # SGD keeps nothing on the host
    make_capturable([adam])  # idempotent
    assert adam.state[p]["step"].item() == 1.0


@pytest.mark.parametrize(
    "strategy, layout",
    [(s, None) for s in list_strategies() if s in ("darts", "darts2", "pcdarts")]
    + [("darts", "batched"), ("darts2", "batched"), ("darts", "per_edge")],
)
def test_step_body_reads_nothing_on_the_host(strategy, layout, monkeypatch):
    """The body a graph captures must queue work without reading tensors back: Tensor.item, tolist and
    bool/float conversions of tensors raise here (the batched layout too: its edge order is a buffer
    made once, not a tensor built from a list in every forward)."""
    space = load_space("cell_v1").replace(init_channels=4, layers=3)
    strat = create_strategy(strategy, ArchOptimConfig())
    kwargs = strat.supernet_options() | ({"layout": layout} if layout else {})
    net = build_supernet(space, 10, **kwargs)
    strat.attach(net)
    weights = net.weight_parameters()
    opt = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)
    body = SearchStep(net, strat, opt, weights, grad_clip=5.0)
    ctx = StepContext(loss=body.loss, virtual_step=sgd_virtual_step(opt), lr=0.025)
    batch = (torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    body(batch, batch, ctx, True)  # first step: lazy optimizer state

    def forbidden(*args, **kwargs):
        raise AssertionError("host read of a tensor inside the step")

    # Adam's step count is a host number here; in a graph make_capturable keeps it on the GPU instead
    adam_module = importlib.import_module("torch.optim.adam")
    monkeypatch.setattr(adam_module, "_get_value", lambda x: float(x.detach().numpy()))
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for name in (
        "tensor",
        "as_tensor",
    ):  # a tensor made from host values in the step is a host-to-device copy
        monkeypatch.setattr(torch, name, forbidden)
    out = body(batch, batch, ctx, True)
    monkeypatch.undo()
    assert set(out) == {"loss", "correct", "arch_loss", "grad_norm"} and torch.isfinite(out["loss"])
