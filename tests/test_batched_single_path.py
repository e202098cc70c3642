"""Single-path strategies (GDAS, SPOS) on the batched layout compute exactly what the per-edge layouts
compute (float64, 1e-10), on a DARTS cell space with stride-1 and stride-2 edges.

The reference for a space whose pooling has a BatchNorm (``pool_bn``) is ``per_source``: a single path runs
a parameter-free op through its source's shared module once per edge that picked it (``MixedEdge.
forward_single``), which the batched layout keeps, while ``per_edge`` updates each edge's own copy. Without
``pool_bn`` the reference is ``per_edge``. Every state entry agrees but ``num_batches_tracked`` of the wide
BatchNorms, which counts the forwards in which at least one of its edges ran (checked exactly here).

Search steps use SGD without momentum and weight decay: with them, torch's optimizers skip a per-edge
module off the path (no gradient) but decay and carry momentum on every slice of a wide parameter one of
whose edges ran, so the layouts part (see :mod:`pflnas.supernet.batched_single`).
"""

from __future__ import annotations

import json

import pytest
import torch
from _batched import TOL, batches, float64, gap, grads, pair, search_steps
from _spaces import tiny
from _tiny_runs import Launcher, search_argv, tiny_archive

from pflnas.arch.derive import derive_architecture
from pflnas.config.search import SposConfig
from pflnas.strategies.subnet_eval import SubnetEvaluator
from pflnas.supernet.layouts import to_batched
from pflnas.supernet.network import Supernet

pytestmark = pytest.mark.usefixtures(float64.__name__)
COUNT = "num_batches_tracked"
REFERENCES = [(False, "per_edge"), (True, "per_source")]  # (pool_bn, reference layout)


def _pair(pool_bn: bool, layout: str) -> tuple[Supernet, Supernet]:
    ref, batched = pair(tiny("darts").replace(pool_bn=pool_bn), layout)
    assert any(c.reduction for c in batched.cells) and any(not c.reduction for c in batched.cells)
    return ref, batched


def _record(net: Supernet) -> list[dict[str, list[int]]]:
    """Every path ``net`` is told to run from now on."""
    seen: list[dict[str, list[int]]] = []
    set_active = net.set_active

    def recording(active):
        if active is not None:
            seen.append({g: list(v) for g, v in active.items()})
        set_active(active)

    net.set_active = recording  # type: ignore[method-assign]
    return seen


def _check_counts(batched: Supernet, paths: list[dict[str, list[int]]]) -> int:
    """Every wide BatchNorm counted the forwards in which one of its edges ran; returns how many wide ops
    of stride-2 sources ran at all."""
    ops, strided = batched.space.ops, 0
    for cell, group in zip(batched.cells, batched.groups):
        for src, edges in cell.batched.out_edges.items():
            for kind, wide in cell.batched.fans[str(src)].wide.items():
                ran = sum(any(ops[p[group][i]] == kind for i in edges) for p in paths)
                bns = [m for m in wide.modules() if isinstance(m, torch.nn.BatchNorm2d)]
                assert bns and all(int(bn.num_batches_tracked) == ran for bn in bns)
                strided += bool(ran) and cell.reduction and src < 2
    return strided


def _paths(space, pattern: int | None) -> dict[str, list[int]]:
    """Op ``pattern`` on every edge (so each source's edges share one wide call), or a random path."""
    n, k = len(space.edges()), len(space.ops)
    g = torch.Generator().manual_seed(3)
    groups = [name for name, _ in space.alpha_groups()]
    return {
        grp: [pattern] * n if pattern is not None else torch.randint(0, k, (n,), generator=g).tolist()
        for grp in groups
    }


@pytest.mark.parametrize(("pool_bn", "layout"), REFERENCES)
@pytest.mark.parametrize("pattern", [None, *range(8)])
def test_single_path_forward_and_gradients_agree(pattern, pool_bn, layout):
    ref, batched = _pair(pool_bn, layout)
    assert batched.space.ops[3] == "skip_connect"  # pattern 3: FactorizedReduce on the stride-2 edges
    active = _paths(batched.space, pattern)
    x = torch.randn(4, 3, 16, 16)
    ys = []
    for net in (ref, batched):
        net.set_active(active)
        ys.append(net.forward_body(x, net.edge_weights()))
        ys[-1].square().sum().backward()
    assert (ys[0] - ys[1]).abs().max() < TOL
    for a, b in zip(ref.arch_parameters(), batched.arch_parameters()):
        assert (a.grad - b.grad).abs().max() < TOL
    assert gap(to_batched(grads(ref), batched), grads(batched), skip=COUNT) < TOL
    assert gap(to_batched(ref.state_dict(), batched), batched.state_dict(), skip=COUNT) < TOL
    _check_counts(batched, [active])


@pytest.mark.parametrize(("pool_bn", "layout"), REFERENCES)
def test_gdas_steps_agree(pool_bn, layout):
    """Three GDAS steps seeded alike draw the same Gumbel samples in both layouts and end alike."""
    ref, batched = _pair(pool_bn, layout)
    paths = [_record(ref), _record(batched)]
    steps = batches(3)
    search_steps(ref, steps, "gdas", momentum=0.0, decay=0.0)
    search_steps(batched, steps, "gdas", momentum=0.0, decay=0.0)
    assert len(paths[0]) == 6 and paths[0] == paths[1]  # a weight and an architecture forward per step
    assert len({json.dumps(p) for p in paths[0]}) == 6  # the samples change every forward
    assert gap(to_batched(ref.state_dict(), batched), batched.state_dict(), skip=COUNT) < TOL
    assert _check_counts(batched, paths[1]) > 0  # some stride-2 wide op ran
    space = batched.space
    found_ref = derive_architecture(space, ref.probabilities()).to_dict()
    found_bat = derive_architecture(space, batched.probabilities()).to_dict()
    assert found_ref["cells"] == found_bat["cells"]


@pytest.mark.parametrize(("pool_bn", "layout"), REFERENCES)
def test_spos_search_agrees(pool_bn, layout):
    """SPOS' supernet training (random paths) and its search with inherited weights (BatchNorm
    recalibrated per candidate with momentum None, eval-mode scores) agree, and the evaluator restores
    every statistic in both layouts."""
    ref, batched = _pair(pool_bn, layout)
    steps = batches(3)
    strategies = [search_steps(net, steps, "spos", momentum=0.0, decay=0.0) for net in (ref, batched)]
    assert strategies[0].last_path == strategies[1].last_path
    before = batched.state_dict()
    assert gap(to_batched(ref.state_dict(), batched), before, skip=COUNT) < TOL
    cfg = SposConfig(population=3, sample_size=2, cycles=3, bn_batches=2, eval_batches=2)
    rows = []
    for net, strategy in zip((ref, batched), strategies):
        with SubnetEvaluator(net, [b[0] for b in steps], [b[1] for b in steps], cfg, seed=0) as evaluate:
            rows.append(strategy.after_training(evaluate))
    assert len(rows[0]) == len(rows[1]) == 6
    for a, b in zip(*rows):
        assert a["genome"] == b["genome"] and a["accuracy"] == b["accuracy"]
        assert abs(a["loss"] - b["loss"]) < TOL
    assert strategies[0].result["genome"] == strategies[1].result["genome"]
    assert gap(batched.state_dict(), before) == 0.0  # the evaluator restored every statistic


@pytest.mark.slow
def test_gdas_search_runs_batched(tmp_path, session_cache):
    source = tiny_archive(tmp_path / "data")
    out = tmp_path / "run"
    argv = search_argv(source, out, 1, "space.layout=batched", "strategy.name=gdas", "data.subset=32")
    proc = Launcher().start(argv, {"PFLNAS_CACHE": session_cache, "OMP_NUM_THREADS": "1"}, tmp_path / "log")
    proc.join(300)
    assert proc.exitcode == 0, (tmp_path / "log").read_text()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["layout"] == "batched"
    assert json.loads((out / "found.json").read_text())["cells"]
