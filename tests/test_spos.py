"""SPOS: uniform single-path supernet training, candidates scored with inherited weights (BatchNorm
recalibrated), regularized evolution and the random-search baseline at the same budget."""

from __future__ import annotations

import contextlib
import json
import random
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from _spaces import tiny

from pflnas.arch import load_architecture
from pflnas.arch.genome import GenomeSpace
from pflnas.cli.main import main
from pflnas.config.search import ArchOptimConfig, SposConfig
from pflnas.errors import ArchitectureError
from pflnas.spaces.labels import parse_label
from pflnas.strategies import StepContext, create_strategy
from pflnas.strategies.evolution_core import (
    RegularizedEvolution,
    best,
    mutate_genome,
    random_search,
    sample_genome,
)
from pflnas.strategies.subnet_eval import PathSelector, SubnetEvaluator, batchnorms, recalibrate_batchnorm
from pflnas.supernet import build_supernet

pytestmark = pytest.mark.usefixtures("one_thread")


def _attached(name="cell_v1", seed=0, strategy="spos"):
    torch.manual_seed(seed)
    space = tiny(name)
    s = create_strategy(strategy, ArchOptimConfig())
    net = build_supernet(space, 10, image_size=16)
    s.attach(net)
    return net, s


def _batches(n, seed=0, size=8):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 3, 16, 16, generator=g), torch.randint(0, 10, (size,), generator=g))
        for _ in range(n)
    ]


# --- genomes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cell_v1", "darts", "nb201", "resnet50_block", "vit_s_mixer"])
def test_genomes_are_valid_architectures_and_round_trip(name):
    gs = GenomeSpace.of(tiny(name))
    rng = random.Random(0)
    for _ in range(5):
        genome = sample_genome(gs.options, rng)
        arch = gs.to_architecture(genome)  # validated by the record
        assert gs.from_architecture(arch) == genome
        decisions = gs.edge_ops(genome)
        kept = [op for op in decisions.values() if op is not None]
        assert len(kept) == len(arch.decisions())
        assert sorted(kept) == sorted(d.op for d in arch.decisions())
    with pytest.raises(ArchitectureError, match="not one of"):
        gs.check({**genome, next(iter(genome)): "bogus"})


# --- supernet training ----------------------------------------------------------------------------------
def test_training_is_single_path_and_touches_no_alphas():
    net, s = _attached()
    space = net.space
    ran = set()
    for c, cell in enumerate(net.cells):
        for key, edge in cell.edges.items():
            for op, module in edge.trainable.items():
                module.register_forward_hook(lambda m, i, o, tag=(c, key, op): ran.add(tag))
    alphas = [a.detach().clone() for a in net.arch_parameters()]
    weights = [w.detach().clone() for w in net.weight_parameters()]
    tb, vb = _batches(2)
    ctx = StepContext(loss=lambda b: F.cross_entropy(net(b[0]), b[1]))
    assert s.arch_step(tb, vb, ctx) == {}  # updates nothing
    assert all(torch.equal(a, b) for a, b in zip(weights, net.weight_parameters()))
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1)
    for _ in range(3):
        ran.clear()
        opt.zero_grad()
        F.cross_entropy(net(tb[0]), tb[1]).backward()
        opt.step()
        path = s.genomes.edge_ops(s.last_path)
        expected = set()
        for c, (cell, group) in enumerate(zip(net.cells, net.groups)):
            for key, edge in cell.edges.items():
                op = path[f"{group}.{key}"]
                if op is not None and op in edge.trainable:
                    expected.add((c, key, op))
        assert ran == expected  # only the sampled path's trainable ops ran; dropped edges ran none
        kept = Counter(parse_label(label)[:2] for label, op in path.items() if op is not None)
        assert set(kept.values()) == {space.keep_edges}  # every node of every cell keeps 2 inputs
        assert all(a.grad is None for a in net.arch_parameters())
    assert all(torch.equal(a, b) for a, b in zip(alphas, net.arch_parameters()))


def test_paths_are_uniform_and_seeded():
    net, s = _attached()
    draws = [s.sample_genome() for _ in range(400)]
    for key, values in s.genomes.options.items():
        counts = Counter(d[key] for d in draws)
        assert set(counts) == set(values)  # every op (and every input pair) is sampled
        expected = len(draws) / len(values)
        assert all(abs(c - expected) < 0.5 * expected for c in counts.values())
    ops = Counter(v for d in draws for k, v in d.items() if ".op" in k)
    assert set(ops) == set(net.space.ops)  # cell_v1 has no 'none': all 5 ops train
    # same seed -> same sequence; the generator state round-trips (resume)
    _, s2 = _attached()
    assert [s2.sample_genome() for _ in range(400)] == draws
    state = s.state_dict()
    nxt = [s.sample_genome() for _ in range(3)]
    _, s3 = _attached(seed=7)
    assert s3.sample_genome() != nxt[0]
    s3.load_state_dict(state)
    assert [s3.sample_genome() for _ in range(3)] == nxt


def test_eval_mode_paths_leave_the_training_sequence_alone():
    net, s = _attached("nb201")
    x = torch.randn(2, 3, 16, 16)
    net.train()
    net(x)
    net.eval()
    first = [(net(x), s.last_path)[1] for _ in range(3)]
    net.train()
    net(x)
    after = s.generator.get_state()
    net.eval()
    again = [(net(x), s.last_path)[1] for _ in range(3)]
    assert first == again  # every evaluation scores the same random paths
    _, ref = _attached("nb201")
    ref.sample_genome(), ref.sample_genome()  # the two training forwards
    assert torch.equal(ref.generator.get_state(), after)


# --- scoring a candidate --------------------------------------------------------------------------------
def _dense_reference(net, weights_by_group):
    """The dense supernet (every op computed, as DARTS) with given mixing weights: the alphas hold them."""
    with torch.no_grad():
        for group, w in weights_by_group.items():
            for row, p in zip(w, net.arch[group].values()):
                p.copy_(row)
    net.set_mixing(lambda a: a, single_path=False)


def _candidate_weights(net, genome):
    gs = GenomeSpace.of(net.space)
    path = gs.edge_ops(genome)
    out = {}
    for group in net.arch:
        ops = net.space.group_ops(group)
        rows = []
        for key in net.space.choice_keys():
            op = path[f"{group}.{key}"]
            rows.append(torch.tensor([1.0 if o == op else 0.0 for o in ops]))  # dropped edge: all zero
        out[group] = torch.stack(rows)
    return out


@pytest.mark.parametrize("name", ["cell_v1", "darts", "nb201", "resnet50_block"])
def test_selected_path_computes_the_candidate(name):
    torch.manual_seed(0)
    net = build_supernet(tiny(name), 10, image_size=16).eval()
    genome = sample_genome(GenomeSpace.of(net.space).options, random.Random(3))
    x = torch.randn(2, 3, 16, 16)
    selector = PathSelector(net)
    selector.install()
    selector.select(genome)
    single = net(x)
    selector.remove()
    _dense_reference(net, _candidate_weights(net, genome))
    dense = net(x)
    assert torch.allclose(single, dense, atol=1e-5)
    if net.space.is_block:
        return
    # a dropped edge contributes nothing: scrambling every op on it leaves the output unchanged
    path = selector.genomes.edge_ops(genome)
    selector.install()
    selector.select(genome)
    dropped = [
        edge
        for cell, g in zip(net.cells, net.groups)
        if g is not None
        for k, edge in cell.edges.items()
        if path[f"{g}.{k}"] is None
    ]
    if dropped:
        with torch.no_grad():
            for edge in dropped:
                for p in edge.parameters():
                    p.add_(torch.randn_like(p))
        assert torch.allclose(net(x), single, atol=1e-6)
    kept = next(
        edge.trainable[op]
        for cell, g in zip(net.cells, net.groups)
        if g is not None
        for k, edge in cell.edges.items()
        if (op := path[f"{g}.{k}"]) in edge.trainable
    )
    with torch.no_grad():
        for p in kept.parameters():
            p.add_(1.0)
    assert not torch.allclose(net(x), single, atol=1e-4)


def test_evaluator_recalibrates_batchnorm_and_scores_as_the_dense_candidate():
    torch.manual_seed(0)
    net = build_supernet(tiny("cell_v1"), 10, image_size=16)
    bn_data, eval_data = _batches(3, seed=1), _batches(2, seed=2)
    genome = sample_genome(GenomeSpace.of(net.space).options, random.Random(5))
    stem_bn = net.stem[1]
    before = {id(b): b.detach().clone() for m in batchnorms(net) for b in m.buffers(recurse=False)}
    cfg = SposConfig(bn_batches=2, eval_batches=1)
    with SubnetEvaluator(net, bn_data, eval_data, cfg) as ev:
        score = ev.evaluate(genome)
        assert int(stem_bn.num_batches_tracked) == 2  # reset, then exactly the 2 recalibration batches
        assert not torch.equal(stem_bn.running_mean, before[id(stem_bn.running_mean)])
        # the cumulative average of the 2 batches' statistics
        means = [net.stem[0](x).mean((0, 2, 3)) for x, _ in bn_data[:2]]
        assert torch.allclose(stem_bn.running_mean, (means[0] + means[1]) / 2, atol=1e-5)
        assert ev(genome) == score["accuracy"]  # deterministic
        assert score["images"] == 8
    assert net.training and all(  # closing restores the supernet's own statistics
        torch.equal(b, before[id(b)]) for m in batchnorms(net) for b in m.buffers(recurse=False)
    )
    # the same numbers from the dense supernet with one-hot mixing and zeroed dropped edges
    _dense_reference(net, _candidate_weights(net, genome))
    recalibrate_batchnorm(net, bn_data[:2], contextlib.nullcontext)
    net.eval()
    with torch.no_grad():
        logits = net(eval_data[0][0])
    assert F.cross_entropy(logits, eval_data[0][1]).item() == pytest.approx(score["loss"], abs=1e-5)


# --- the search algorithms --------------------------------------------------------------------------------
OPTIONS = {f"c{i}": ("a", "b", "c", "d") for i in range(12)}


def _onemax(genome):
    return sum(v == "d" for v in genome.values()) + 0.01 * sum(v == "c" for v in genome.values())


def test_mutation_changes_exactly_one_choice():
    rng = random.Random(0)
    g = sample_genome(OPTIONS, rng)
    for _ in range(50):
        child, key = mutate_genome(g, {**OPTIONS, "fixed": ("x",)}, rng)
        assert key != "fixed" and [k for k in OPTIONS if child[k] != g[k]] == [key]
    assert mutate_genome({"only": "x"}, {"only": ("x",)}, rng) == ({"only": "x"}, None)


def test_regularized_evolution_improves_and_is_deterministic():
    def run(seed):
        return RegularizedEvolution(OPTIONS, population=10, sample_size=3, rng=random.Random(seed)).run(
            _onemax, cycles=150
        )

    hist = run(0)
    assert len(hist) == 160 and [i.index for i in hist] == list(range(160))
    assert all(i.parent is None for i in hist[:10]) and all(i.parent is not None for i in hist[10:])
    assert all(hist[i.parent].index < i.index for i in hist[10:])
    initial = max(i.fitness for i in hist[:10])
    assert best(hist).fitness > initial + 2  # evolution climbs well beyond the random population
    assert run(0) == hist  # deterministic for a seed
    assert run(1) != hist
    # random search at the same budget, on the same footing
    rand = random_search(OPTIONS, _onemax, 160, random.Random(0))
    assert random_search(OPTIONS, _onemax, 160, random.Random(0)) == rand
    assert best(hist).fitness >= best(rand).fitness


def test_aging_and_tournament():
    evo = RegularizedEvolution(OPTIONS, population=4, sample_size=4, rng=random.Random(0))
    evo.run(_onemax, cycles=6)
    assert [i.index for i in evo.population] == [6, 7, 8, 9]  # the oldest members died
    proposal = evo.ask()  # the tournament covers the whole population: its fittest is the parent
    fittest = max(evo.population, key=lambda i: (i.fitness, -i.index))
    assert proposal.parent == fittest.index
    with pytest.raises(ValueError, match="sample_size"):
        RegularizedEvolution(OPTIONS, population=3, sample_size=4, rng=random.Random(0))


def test_after_training_searches_and_exports_the_best():
    net, s = _attached("nb201")
    data = _batches(2)
    cfg = SposConfig(population=4, sample_size=2, cycles=4, bn_batches=1)
    with SubnetEvaluator(net, data, data, cfg, seed=3) as ev:
        rows = s.after_training(ev)
    assert len(rows) == 8 and [r["index"] for r in rows] == list(range(8))
    assert all(r["parent"] is None for r in rows[:4]) and all(r["parent"] is not None for r in rows[4:])
    assert {"index", "genome", "accuracy", "loss", "parent", "mutated", "param_free_share"} <= set(rows[0])
    arch = s.export({"strategy": "spos"})
    top = max(rows, key=lambda r: (r["accuracy"], -r["index"]))
    assert GenomeSpace.of(net.space).from_architecture(arch) == top["genome"]
    assert arch.provenance["one_shot"]["best_accuracy"] == pytest.approx(top["accuracy"], abs=1e-6)
    assert arch.provenance["one_shot"]["evaluated"] == 8 and arch.provenance["strategy"] == "spos"
    # the random baseline: same budget, same schema, no parents
    net, r = _attached("nb201", strategy="spos_random")
    with SubnetEvaluator(net, data, data, cfg, seed=3) as ev:
        rand_rows = r.after_training(ev)
    assert len(rand_rows) == 8 and all(row["parent"] is None for row in rand_rows)
    assert set(rand_rows[0]) == set(rows[0])


# --- end to end -----------------------------------------------------------------------------------------
TINY = [
    "--set", "space.init_channels=4",
    "--set", "space.layers=3",
    "--set", "data.subset=64",
    "--set", "data.batch_size=16",
    "--set", "data.eval_limit=32",
    "--set", "run.progress=false",
    "--set", "spos.population=4",
    "--set", "spos.sample_size=2",
    "--set", "spos.cycles=4",
    "--set", "spos.bn_batches=2",
]  # fmt: skip


@pytest.fixture
def _cache(monkeypatch, session_cache):
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["spos", "spos_random"])
def test_cli_search_writes_found_and_history(tmp_path, cifar_source, _cache, strategy):
    out = tmp_path / "run"
    args = ["search", "--space", "cell_v1", "--strategy", strategy, "--data-dir", cifar_source]
    assert main([*args, "--out", str(out), "--epochs", "1", *TINY]) == 0
    arch = load_architecture(out / "found.json")
    rows = [json.loads(line) for line in (out / "evolution.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    top = max(rows, key=lambda r: (r["accuracy"], -r["index"]))
    assert arch.provenance["strategy"] == strategy
    assert arch.provenance["one_shot"]["best_accuracy"] == pytest.approx(top["accuracy"], abs=1e-6)
    assert GenomeSpace.of(arch.space).from_architecture(arch) == top["genome"]
    assert all(len(c.edges) == 8 for c in arch.cells)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and 0.0 <= metrics[0]["val_acc"] <= 1.0


@pytest.mark.slow
def test_resume_after_an_interruption_gives_the_same_found_json(tmp_path, cifar_source, _cache, monkeypatch):
    from pflnas.config.loader import build_config
    from pflnas.config.search import SearchConfig
    from pflnas.train.search import SearchRun

    sets = [a for a in TINY if a != "--set"] + ["run.epochs=2", "strategy.name=spos"]
    cfg = build_config(SearchConfig, [], [*sets, f"data.data_dir={cifar_source}"])
    full = SearchRun(cfg, tmp_path / "full").run()

    class Interrupted(Exception):
        pass

    original = SearchRun._train_epoch

    def stop_in_second_epoch(self, epoch):
        if epoch == 1:
            raise Interrupted
        return original(self, epoch)

    monkeypatch.setattr(SearchRun, "_train_epoch", stop_in_second_epoch)
    with pytest.raises(Interrupted):
        SearchRun(cfg, tmp_path / "cut").run()
    monkeypatch.setattr(SearchRun, "_train_epoch", original)
    resumed = SearchRun(cfg, tmp_path / "cut").run(resume=True)
    assert resumed.cells == full.cells
    a, b = full.provenance["one_shot"], resumed.provenance["one_shot"]
    a.pop("search_time_s"), b.pop("search_time_s")
    assert a == b
    history = [(tmp_path / run / "evolution.jsonl").read_text() for run in ("full", "cut")]
    assert history[0] == history[1]
