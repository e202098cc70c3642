"""Latency-aware search: the per-op latency table, its cache, the expected latency in the architecture loss,
and ``pflnas search --latency-weight``."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from _data_fixtures import make_archive, make_tree
from _spaces import tiny

import pflnas.measure.latency_table as table_mod
from pflnas.cli.main import main
from pflnas.config.search import ArchOptimConfig
from pflnas.measure.context import SpeedConfig
from pflnas.measure.latency_objective import LatencyTerm, expected_latency
from pflnas.measure.latency_table import cached_table, measure_table
from pflnas.measure.positions import choice_positions
from pflnas.ops import get_op
from pflnas.strategies import StepContext, create_strategy, list_strategies
from pflnas.supernet import build_supernet

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = SpeedConfig(device="cpu", batch_size=1, warmup=1, repeats=2, threads=1)
# an arbitrary but fixed cost per op: convolutions expensive, parameter-free ops cheap
OP_COST = {
    "conv_3x3": 1.0,
    "dw_conv_3x3": 0.7,
    "conv_1x1": 0.5,
    "max_pool_3x3": 0.2,
    "avg_pool_3x3": 0.15,
    "skip_connect": 0.01,
}
DIFFERENTIABLE = [s for s in list_strategies() if create_strategy(s, ArchOptimConfig()).updates_alphas]


def fake_ms(run) -> float:
    """A deterministic 'time' that depends on every field of the op run."""
    return (
        OP_COST.get(run.op, 0.3)
        * run.channels
        * run.height
        * run.width
        / 64
        * (1.5 if run.stride == 2 else 1)
    )


@pytest.fixture
def fake_timer(monkeypatch):
    """Replace op timing by :func:`fake_ms`; the list collects every op run that was 'timed'."""
    calls = []

    def time_op(run, cfg):
        calls.append(run)
        return fake_ms(run), 0.0

    monkeypatch.setattr(table_mod, "time_op", time_op)
    return calls


def labels_of(net) -> set[str]:
    return {label for label, _ in net.named_arch_parameters()}


@pytest.mark.parametrize("name", ["cell_v1", "nb201", "resnet50_block"])
def test_table_covers_every_choice_and_op_and_none_is_free(name, fake_timer):
    space = tiny(name)
    table = measure_table(space, 16, CPU)
    net = build_supernet(space, 10, image_size=16)
    assert set(table.choices) == labels_of(net)
    for label, row in table.choices.items():
        assert list(row) == list(space.group_ops(label.split(".")[0]))
        for op, ms in row.items():
            assert ms == 0.0 if get_op(op).is_zero else ms > 0
    # every distinct op run timed exactly once, never 'none'
    assert len(fake_timer) == len(set(fake_timer)) == len(table.timings)
    assert not any(get_op(r.op).is_zero for r in fake_timer)


def test_costs_sum_positions_with_the_kept_edge_share(fake_timer):
    """Shared alphas: one choice runs in several cells; a DARTS node keeps 2 of its incoming edges."""
    space = tiny("cell_v1").replace(alpha_mode="shared", layers=4)  # cells: normal, reduce, reduce, normal
    table = measure_table(space, 16, CPU)
    # edge 5<-0 of the normal cells: cell 0 at stage 0 (16x16, 4 ch) and cell 3 at stage 2 (4x4, 16 ch)
    expect = sum(2 / 5 * OP_COST["conv_3x3"] * c * s * s / 64 for c, s in ((4, 16), (16, 4)))
    assert table.choices["normal.edge5<-0"]["conv_3x3"] == pytest.approx(expect)
    # a reduction cell's edge from an input node is strided and reads the previous stage's grid
    reduce = sum(OP_COST["avg_pool_3x3"] * c * s * s / 64 * 1.5 for c, s in ((8, 16), (16, 8)))
    assert table.choices["reduce.edge2<-1"]["avg_pool_3x3"] == pytest.approx(reduce)
    # op runs repeated at several positions are timed once: sites x ops, not cells x edges x ops
    assert len(fake_timer) == len(space.op_sites(16)) * len(space.ops)
    assert sum(len(p) for p in choice_positions(space, 16).values()) == 4 * 14


def test_real_timing_of_a_tiny_space():
    table = measure_table(tiny("nb201"), 16, CPU)
    assert table.key["device"] == "cpu" and table.key["threads"] == 1
    assert all(t.median_ms > 0 for t in table.timings)
    row = table.choices["cell.edge1<-0"]
    assert row["none"] == 0.0 and row["conv_3x3"] > 0


def test_cache_reuses_and_the_key_follows_device_and_space(tmp_path, fake_timer, monkeypatch):
    space = tiny("nb201")
    first = cached_table(space, 16, CPU, tmp_path)
    assert not first.reused and first.path.is_file() and first.path.is_relative_to(tmp_path)
    timed = len(fake_timer)
    assert timed > 0
    second = cached_table(space, 16, CPU, tmp_path)
    assert second.reused and second.path == first.path and len(fake_timer) == timed  # nothing timed
    assert second.table.choices == first.table.choices
    # another space, batch, image size or device is another entry, measured anew
    other = cached_table(space.replace(init_channels=8), 16, CPU, tmp_path)
    assert not other.reused and other.path != first.path
    assert cached_table(
        space, 16, SpeedConfig(device="cpu", batch_size=2, repeats=2, threads=1), tmp_path
    ).path not in (
        first.path,
        other.path,
    )
    monkeypatch.setattr(table_mod, "device_name", lambda device: "Another CPU")
    moved = cached_table(space, 16, CPU, tmp_path)
    assert not moved.reused and moved.path != first.path and moved.table.key["device_name"] == "Another CPU"
    # a corrupt entry is measured again, not fatal
    first.path.write_text("{not json")
    monkeypatch.undo()
    monkeypatch.setattr(table_mod, "time_op", lambda run, cfg: (fake_ms(run), 0.0))
    assert not cached_table(space, 16, CPU, tmp_path).reused


def test_cache_dir_defaults_to_pflnas_cache(tmp_path, fake_timer, monkeypatch):
    monkeypatch.setenv("PFLNAS_CACHE", str(tmp_path / "c"))
    source = cached_table(tiny("nb201"), 16, CPU)
    assert source.path.parent == tmp_path / "c" / "latency"


def _net_with_alphas(space, seed=0):
    torch.manual_seed(seed)
    net = build_supernet(space, 10, image_size=16)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.randn_like(p))
    return net


@pytest.mark.parametrize("name", ["cell_v1", "nb201"])
def test_expected_latency_matches_a_hand_computation(name, fake_timer):
    space = tiny(name)
    table = measure_table(space, 16, CPU)
    net = _net_with_alphas(space)
    by_hand = 0.0
    for label, alpha in net.named_arch_parameters():
        ops = space.group_ops(label.split(".")[0])
        exp = [math.exp(a) for a in alpha.tolist()]
        by_hand += sum(e / sum(exp) * table.choices[label][op] for e, op in zip(exp, ops))
    term = LatencyTerm(net, table, weight=2.0)
    assert term.expected_ms() == pytest.approx(by_hand, rel=1e-5)
    assert expected_latency(net.probabilities(), table) == pytest.approx(by_hand, rel=1e-5)
    # the architecture objective adds weight * E[lat]; the training loss stays as it was
    batch, other = (torch.zeros(1),), (torch.zeros(1),)
    plain = lambda b: torch.tensor(1.0)  # noqa: E731
    ctx = StepContext(loss=plain, arch_loss=term.objective(plain))
    assert ctx.objective(batch).item() == pytest.approx(1.0 + 2.0 * by_hand, rel=1e-5)
    assert ctx.loss(other).item() == 1.0


def _setup(strategy_name, space, seed=0):
    torch.manual_seed(seed)
    strategy = create_strategy(strategy_name, ArchOptimConfig(lr=0.05))
    net = build_supernet(space, 10, image_size=16, **strategy.supernet_options())
    strategy.attach(net)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9)

    def loss(batch):
        x, y = batch
        return F.cross_entropy(net(x), y)

    def virtual_step(params, grads):
        return [0.05 * g for g in grads]

    ctx = StepContext(loss=loss, virtual_step=virtual_step, lr=0.05)
    g = torch.Generator().manual_seed(seed)
    batches = [
        (torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(2)
    ]
    return net, strategy, opt, ctx, batches


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_a_latency_dominated_arch_step_moves_towards_cheaper_ops(name, fake_timer):
    space = tiny("nb201")
    net, strategy, _, ctx, (tb, vb) = _setup(name, space)
    term = LatencyTerm(net, measure_table(space, 16, CPU), weight=1e4)  # CE is negligible beside it
    before = term.expected_ms()
    probs_before = net.probabilities()
    weights = [w.detach().clone() for w in net.weight_parameters()]
    strategy.arch_step(tb, vb, dataclasses.replace(ctx, arch_loss=term.objective(ctx.loss)))
    assert term.expected_ms() < before
    after = net.probabilities()
    for label in after:  # the cheapest op gains and the most expensive loses on every choice
        assert after[label]["skip_connect"] > probs_before[label]["skip_connect"]
        assert after[label]["conv_3x3"] < probs_before[label]["conv_3x3"]
    assert all(torch.equal(a, w) for a, w in zip(weights, net.weight_parameters()))


def test_second_order_darts_only_gains_the_latency_gradient(fake_timer):
    """The latency term does not depend on the weights: darts2's virtual step and finite-difference Hessian
    see the same weight gradients, and its alpha gradient changes by exactly weight * dE[lat]/d alpha."""
    space = tiny("nb201")
    net, strategy, _, ctx, (tb, vb) = _setup("darts2", space)
    term = LatencyTerm(net, measure_table(space, 16, CPU), weight=3.0)
    seen = []

    def spy(grads):  # the loop's hook for gradients a strategy uses itself: train_grads, then d_w
        seen.append([g.clone() for g in grads])
        return list(grads)

    plain = dataclasses.replace(ctx, average=spy)
    _, g_plain = strategy._unrolled_grads(tb, vb, plain)
    _, g_lat = strategy._unrolled_grads(
        tb, vb, dataclasses.replace(plain, arch_loss=term.objective(ctx.loss))
    )
    assert len(seen) == 4  # weight gradients (virtual step, then validation): bitwise the same
    for a, b in zip(seen[:2], seen[2:]):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    alphas = net.arch_parameters()
    d_lat = torch.autograd.grad(term.weight * term.expected(), alphas, allow_unused=True)
    for gp, gl, dl, a in zip(g_plain, g_lat, d_lat, alphas):
        dl = torch.zeros_like(a) if dl is None else dl
        assert torch.allclose(gl - gp, dl, atol=1e-5), (gl - gp - dl).abs().max()


# --- through the search loop and the CLI -----------------------------------------------------------------
TINY = [
    "--space",
    "cell_v1",
    "--epochs",
    "2",
    *("--set", "space.init_channels=4", "--set", "space.layers=3", "--set", "data.subset=24"),
    *("--set", "data.batch_size=8", "--set", "data.eval_limit=16", "--set", "run.progress=false"),
]


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory) -> str:
    """A small CIFAR-shaped archive (these tests need a search to run, not real images): it loads in well
    under a second, where the real CIFAR-10 takes seconds per search."""
    root = tmp_path_factory.mktemp("fake-cifar")
    make_tree(root / "tree", n_train=4, n_test=1)
    return str(make_archive(root / "tree", root / "cifar10-fake.tar.gz"))


@pytest.fixture
def cache(monkeypatch, session_cache):
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)
    return session_cache


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_search_with_latency_weight_writes_table_and_expected_latency(
    tmp_path, fake_cifar, cache, fake_timer, capsys
):
    lat_cache = tmp_path / "lat"
    args = ["search", "--data-dir", fake_cifar, *TINY, "--latency-weight", "1", "--latency-device", "cpu"]
    args += ["--set", f"latency.cache_dir={lat_cache}"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "latency table: measured" in printed and "E[latency]" in printed
    timed = len(fake_timer)
    assert timed > 0
    table = json.loads((tmp_path / "a" / "latency_table.json").read_text())
    cached = list((lat_cache / "latency").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == table
    rows = _rows(tmp_path / "a")
    assert all(r["expected_latency_ms"] > 0 for r in rows)
    # the logged value is the expectation under the logged probabilities
    from pflnas.measure.latency_table import load_table

    lt = load_table(tmp_path / "a" / "latency_table.json")
    assert rows[-1]["expected_latency_ms"] == pytest.approx(expected_latency(rows[-1]["probs"], lt), rel=1e-4)
    # a second search on the same device and space reuses the cached table: nothing is timed
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert "latency table: reused cached" in capsys.readouterr().out
    assert len(fake_timer) == timed
    assert json.loads((tmp_path / "b" / "latency_table.json").read_text()) == table
    # a resumed run reads its own copy, not the cache (gone here) nor a new measurement
    for entry in cached:
        entry.unlink()
    assert main(["search", "--resume", str(tmp_path / "a")]) == 0
    assert "latency table: the run's own" in capsys.readouterr().out
    assert len(fake_timer) == timed and not list((lat_cache / "latency").glob("*.json"))


def test_zero_latency_weight_times_nothing_and_changes_nothing(tmp_path, fake_cifar, cache, monkeypatch):
    def refuse(run, cfg):
        raise AssertionError("timed an op with latency.weight=0")

    monkeypatch.setattr(table_mod, "time_op", refuse)
    assert main(["search", "--data-dir", fake_cifar, *TINY, "--out", str(tmp_path / "a")]) == 0
    assert (
        main(
            [
                "search",
                "--data-dir",
                fake_cifar,
                *TINY,
                "--latency-weight",
                "0",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    assert not (tmp_path / "a" / "latency_table.json").exists()
    rows_a, rows_b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert all("expected_latency_ms" not in r for r in rows_a + rows_b)
    drop = ("epoch_time",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows_a] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows_b
    ]
    found = [json.loads((tmp_path / d / "found.json").read_text()) for d in "ab"]
    assert found[0]["probabilities"] == found[1]["probabilities"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--latency-weight", "-1"], "latency.weight must be >= 0"),
        (["--latency-weight", "x"], "invalid float value"),
        (["--latency-weight", "1", "--latency-device", "tpu"], "latency.device must be cpu or cuda"),
        (["--latency-weight", "1", "--strategy", "spos"], "needs a differentiable strategy"),
        (["--latency-weight", "1", "--strategy", "nsga2"], "needs a differentiable strategy"),
        (["--latency-weight", "1", "--set", "latency.repeats=0"], "latency.repeats must be >= 1"),
        (["--latency-device", "cuda"], "no CUDA GPU"),
    ],
)
def test_bad_latency_flags_give_one_line(tmp_path, capsys, flags, message):
    if "cuda" in flags and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "o"
    try:
        code = main(["search", "--out", str(out), *flags])
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()  # refused before touching the disk
