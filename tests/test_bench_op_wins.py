"""``pflnas bench nb201 --op-wins``: exhaustive parameter-free vs trainable op wins, and the Pareto front."""

from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np
import pytest
from _bench import bench, needs_table

from pflnas.arch.chance import chance_share
from pflnas.bench.nb201 import EDGES, OPS, encode_index, load_nb201_table
from pflnas.bench.op_wins import cell_params, cell_shares, network_params

pytestmark = [needs_table, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def table():
    return load_nb201_table()


def loop_op_wins(table, threshold=10.5):
    """The definition, spelled out with loops and the NB201 op names."""
    param_free = [OPS.index("skip_connect"), OPS.index("avg_pool_3x3")]
    trainable = [OPS.index("conv_3x3"), OPS.index("conv_1x1")]
    compared = param_free + trainable
    out = {}
    for position, (node, source) in enumerate(EDGES):
        deltas, wins = [], 0
        for context in itertools.product(range(len(OPS)), repeat=len(EDGES) - 1):
            acc = {op: table.accuracy_of(context[:position] + (op,) + context[position:]) for op in compared}
            free, train = [acc[op] for op in param_free], [acc[op] for op in trainable]
            if all(a <= threshold for a in free + train):
                continue
            delta = max(free) - max(train)
            deltas.append(delta)
            wins += delta > 0
        out[f"edge{node}<-{source}"] = {
            "win_fraction": wins / len(deltas),
            "mean_delta_pp": math.fsum(deltas) / len(deltas),
            "contexts": len(deltas),
        }
    return out


def loop_front(params, accuracy):
    """Cells no other cell dominates: the most accurate at their parameter count, and more accurate than
    every cell with fewer parameters."""
    front, best_below = set(), -math.inf
    for p in sorted(set(params.tolist())):
        at = [i for i in np.flatnonzero(params == p)]
        top = max(accuracy[i] for i in at)
        if top > best_below:
            front |= {i for i in at if accuracy[i] == top}
            best_below = top
    return front


def test_cli_op_wins_equals_the_loop_definition(tmp_path, capsys, table):
    rc, out, err = bench(tmp_path, capsys, "--op-wins", "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report == json.loads((tmp_path / "bench" / "op_wins.json").read_text())
    assert report["edges"] == loop_op_wins(table)  # exactly, float for float
    assert list(report["edges"]) == ["edge1<-0", "edge2<-0", "edge3<-0", "edge2<-1", "edge3<-1", "edge3<-2"]
    assert report["param_free_ops"] == ["skip_connect", "avg_pool_3x3"]
    assert report["trainable_ops"] == ["conv_3x3", "conv_1x1"] and report["excluded_ops"] == ["none"]
    assert report["edges"]["edge3<-0"]["contexts"] == 3125  # the direct edge is never cut off

    pareto, chance = report["pareto"], chance_share(table.space)
    assert report["chance"] == chance == 0.5
    params = cell_params(table)
    expected = loop_front(params, table.acc)
    assert {encode_index(tuple(c["code"])) for c in pareto["front_cells"]} == expected
    assert pareto["front"]["cells"] == len(expected) == len(pareto["front_cells"])
    shares = [c["param_free_share"] for c in pareto["front_cells"] if c["param_free_share"] is not None]
    assert pareto["front"]["param_free_share"] == pytest.approx(np.mean(shares))
    assert pareto["all_cells"]["param_free_share"] == pytest.approx(chance, abs=1e-12)
    assert pareto["top_1pct"]["param_free_share"] == pytest.approx(table.stats(0.01).top_param_free_share)
    for name in ("op_wins", "pareto"):
        assert all((tmp_path / "bench" / f"{name}.{ext}").stat().st_size > 0 for ext in ("png", "svg"))
    rc, text, _ = bench(tmp_path, capsys, "--op-wins")
    assert rc == 0 and "| Pareto front | " in text and "| edge3<-0 | 3125 |" in text


def test_fast_parameter_count_equals_real_builds(table):
    rng = random.Random(0)
    counts = cell_params(table)
    for _ in range(6):
        code = tuple(rng.randrange(len(OPS)) for _ in EDGES)
        assert counts[encode_index(code)] == network_params(table, code)
    assert counts.min() == network_params(table, (OPS.index("none"),) * 6)  # no parameters in any cell
    shares = cell_shares()
    assert math.isnan(shares[encode_index((OPS.index("none"),) * 6)])
    assert shares[encode_index((0, 1, 2, 3, 4, 0))] == pytest.approx(3 / 5)
