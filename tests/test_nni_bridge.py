"""The NNI 3.0 bridge (pflnas.bridges.nni).

The choice-dict conversion needs no NNI and always runs. The model-space and search tests need the optional
``nni`` extra (``pip install 'pflnas[nni]'``, e.g. in .venv-nni) and are skipped, saying why, without it;
`make test` uses the core .venv, so there they skip.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from _spaces import tiny

from pflnas.arch.record import load_architecture, save_architecture
from pflnas.bridges import nni as bridge
from pflnas.errors import ArchitectureError, PflnasError
from pflnas.ops import get_op
from pflnas.spaces import load_space
from pflnas.supernet.mixed import candidate

NO_NNI = "NNI 3.0 is not installed: install the nni extra (pip install 'pflnas[nni]'), e.g. in .venv-nni"
# (space, layout) pairs: every cell kind in both layouts where both exist, shared alphas, a block space
CASES = [
    ("cell_v1", "cell"),
    ("cell_v1", "edges"),
    ("darts", "cell"),
    ("nb201", "edges"),
    ("resnet50_block", "edges"),
]


def first_choice(space, layout):
    """The each-first choice dict of a space, in NNI's format (no nni needed)."""
    out = {}
    for label, cands in bridge.nni_labels(space, layout).items():
        out[label] = [0] if isinstance(cands, int) else cands[0]
    return out


def random_choice(space, layout, seed):
    rng = random.Random(seed)
    out = {}
    for label, cands in bridge.nni_labels(space, layout).items():
        out[label] = [rng.randrange(cands)] if isinstance(cands, int) else rng.choice(cands)
    return out


def chosen_ops(arch):
    """``{(group, node, k): (source, op)}`` of a cell architecture or ``{group: op}`` of a block one."""
    if arch.space.is_block:
        return {b.name: b.op for b in arch.blocks}
    out = {}
    for cell in arch.cells:
        seen = {}
        for e in cell.edges:
            k = seen[e.node] = seen.get(e.node, -1) + 1
            out[(cell.name, e.node, k)] = (e.source, e.op)
    return out


def expected_ops(space, layout, choice):
    if space.is_block:
        return {g: choice[f"{g}.op"] for g, _ in space.alpha_groups()}
    out = {}
    for g, _ in space.alpha_groups():
        for n in space.node_ids():
            if layout == "cell":
                for k in range(space.keep_edges):
                    out[(g, n, k)] = (choice[f"{g}/input_{n}_{k}"][0], choice[f"{g}/op_{n}_{k}"])
            else:
                for s in range(n):
                    out[(g, n, s)] = (s, choice[f"{g}.edge{n}<-{s}"])
    return out


# --- no NNI needed -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name,layout", [c for c in CASES if c[0] != "cell_v1" or c[1] == "cell"])
def test_choice_converts_to_a_valid_found_json(name, layout, tmp_path):
    space = tiny(name)
    for choice in (first_choice(space, layout), random_choice(space, layout, 1)):
        if space.kind == "darts_cell" and layout == "edges":
            continue
        arch = bridge.from_nni_choice(space, choice, {"seed": 1})
        assert chosen_ops(arch) == expected_ops(space, layout, choice)
        assert arch.provenance == {"source": "nni", "seed": 1}
        path = save_architecture(arch, tmp_path / f"{name}.json")
        assert load_architecture(path).to_dict() == arch.to_dict()


def test_edge_labels_are_the_pflnas_labels():
    for name in ("cell_v1", "darts", "nb201", "resnet50_block"):
        space = tiny(name)
        pflnas_labels = {f"{g}.{k}" for g, _ in space.alpha_groups() for k in space.choice_keys()}
        assert set(bridge.nni_labels(space, "edges")) == pflnas_labels
        assert all(
            ops == space.group_ops(label.split(".")[0])
            for label, ops in bridge.nni_labels(space, "edges").items()
        )


def test_darts_edge_layout_picks_two_edges_per_node():
    space = tiny("cell_v1").replace(nodes=2)  # nodes 2 and 3: 2 and 3 incoming edges
    choice = first_choice(space, "edges")
    with pytest.raises(ArchitectureError, match="node 3 of 'cell0' has 3 edges with an op.*probabilities="):
        bridge.from_nni_choice(space, choice)
    probs = {label: {op: (0.6 if op == "max_pool_3x3" else 0.1) for op in space.ops} for label in choice}
    probs["cell0.edge3<-2"] = {op: 0.2 for op in space.ops}  # the weakest edge into node 3 is dropped
    arch = bridge.from_nni_choice(space, choice, probabilities=probs)
    assert [(e.node, e.source, e.op) for e in arch.cell("cell0").edges] == [
        (2, 0, "max_pool_3x3"),
        (2, 1, "max_pool_3x3"),
        (3, 0, "max_pool_3x3"),
        (3, 1, "max_pool_3x3"),
    ]


def test_cell_probabilities_map_nni_no_edge_to_none():
    space = tiny("darts")
    choice = first_choice(space, "cell")
    real = [op for op in space.ops if not get_op(op).is_zero]
    probs = {f"{g}/{n}_{s}": {op: 0.1 for op in real} for g in ("normal", "reduce") for n, s in space.edges()}
    arch = bridge.from_nni_choice(space, choice, probabilities=probs)
    dist = arch.probabilities["normal.edge2<-0"]
    assert dist["none"] == pytest.approx(1 - 0.1 * len(real))
    assert sum(dist.values()) == pytest.approx(1.0, abs=1e-5)
    # without a 'none' op the real ops are renormalised
    space = tiny("cell_v1")
    probs = {f"cell0/{n}_{s}": {op: 0.1 for op in space.ops} for n, s in space.edges()}
    arch = bridge.from_nni_choice(space, first_choice(space, "cell"), probabilities=probs)
    assert arch.probabilities["cell0.edge2<-0"] == {op: pytest.approx(0.2) for op in space.ops}


@pytest.mark.parametrize(
    "name,layout,mutate,message",
    [
        ("cell_v1", "cell", lambda c: c.update({"cell9/op_2_0": "conv_3x3"}), "unknown label 'cell9/op_2_0'"),
        ("cell_v1", "cell", lambda c: c.update({"cell0/op_2_0": "conv_9x9"}), "unknown op 'conv_9x9'"),
        ("cell_v1", "cell", lambda c: c.pop("cell1/input_3_1"), "missing label 'cell1/input_3_1'"),
        ("cell_v1", "cell", lambda c: c.update({"cell0/input_3_0": [3]}), "one source node in 0..2"),
        ("cell_v1", "cell", lambda c: c.update({"cell0/op_2_0": 3}), "must name an op"),
        ("darts", "cell", lambda c: c.update({"normal/op_2_0": "none"}), "unknown op 'none'"),
        ("nb201", "edges", lambda c: c.update({"cell.edge2<-0": "conv_3x3x"}), "not a registered op"),
        ("nb201", "edges", lambda c: c.update({"cell.edge9<-0": "none"}), "unknown label 'cell.edge9<-0'"),
        ("resnet50_block", "edges", lambda c: c.update({"block0.op": "attention"}), "unknown op 'attention'"),
    ],
)
def test_bad_choices_fail_with_one_line(name, layout, mutate, message):
    space = tiny(name)
    choice = first_choice(space, layout)
    mutate(choice)
    with pytest.raises(ArchitectureError) as err:
        bridge.from_nni_choice(space, choice)
    text = str(err.value)
    assert message in text and text.startswith("NNI choice") and "\n" not in text


def test_not_a_dict():
    with pytest.raises(ArchitectureError, match="non-empty dict"):
        bridge.from_nni_choice(load_space("nb201"), [("cell.edge1<-0", "none")])


def test_missing_nni_says_how_to_install(monkeypatch):
    monkeypatch.setattr(bridge, "_checked", True)
    monkeypatch.setattr(bridge, "_status", "ModuleNotFoundError: No module named 'nni'")
    with pytest.raises(PflnasError, match=r"install the nni extra: pip install 'pflnas\[nni\]'"):
        bridge.to_nni_model_space(tiny("cell_v1"))


# --- with NNI ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nni_ready(one_thread):
    pytest.importorskip("nni", reason=NO_NNI)
    reason = bridge.nni_unavailable_reason()
    if reason is not None:
        pytest.skip(f"NNI 3.0 cannot be used here: {reason}")


def _nni_choices(model_space):
    """``{label: candidates}`` (op names, or the number of sources of an input choice) of an NNI space."""
    from nni.mutable import CategoricalMultiple

    out = {}
    for label, mutable in model_space.simplify().items():
        out[label] = (
            len(mutable.values) if isinstance(mutable, CategoricalMultiple) else tuple(mutable.values)
        )
    return out


@pytest.mark.parametrize("name,layout", CASES)
def test_model_space_has_the_pflnas_choices_and_modules(nni_ready, name, layout):
    space = tiny(name)
    ms = bridge.to_nni_model_space(space, image_size=16, layout=layout)
    assert _nni_choices(ms) == bridge.nni_labels(space, layout)
    if layout == "edges" and not space.is_block:
        # the candidates are the pflnas supernet's own modules
        from nni.nas.nn.pytorch import LayerChoice

        lc = next(m for m in ms.modules() if isinstance(m, LayerChoice))
        for op in space.ops:
            assert type(lc[op]) is type(candidate(op, space.init_channels, 1, space.pool_bn))


@pytest.mark.parametrize("name,layout", CASES)
def test_round_trip_through_the_nni_space(nni_ready, name, layout):
    space = tiny(name)
    ms = bridge.to_nni_model_space(space, image_size=16, layout=layout)
    simplified = ms.simplify()
    samples = [{k: v.default() for k, v in simplified.items()}]
    rng = np.random.RandomState(3)
    samples.append({k: v.random(random_state=rng) for k, v in simplified.items()})
    for sample in samples:
        net = ms.freeze(sample)
        assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)
        if space.kind == "darts_cell" and layout == "edges":
            continue  # a DARTS cell from edge choices needs probabilities (tested above)
        arch = bridge.from_nni_choice(space, sample)
        assert chosen_ops(arch) == expected_ops(space, layout, sample)


@pytest.mark.parametrize(
    "name,strategy",
    [
        ("cell_v1", "darts"),
        ("darts", "proxyless"),
        ("nb201", "gumbel_darts"),
        ("nb201", "regularized_evolution"),
    ],
)
def test_nni_search_exports_a_valid_found_json(nni_ready, name, strategy, tmp_path):
    from torch.utils.data import TensorDataset

    space = tiny(name).replace(nodes=2) if name != "nb201" else tiny(name)
    data = TensorDataset(torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,)))
    kwargs = {"population_size": 2, "sample_size": 1} if strategy == "regularized_evolution" else None
    result = bridge.run_nni_search(
        space, strategy, data, data, batch_size=4, limit_train_batches=1, max_models=2, seed=0,
        image_size=16, accelerator="cpu", strategy_kwargs=kwargs,
    )  # fmt: skip
    arch = load_architecture(save_architecture(result.architecture, tmp_path / "found.json"))
    assert arch.provenance["strategy"] == f"nni:{strategy}"
    if strategy != "regularized_evolution":
        assert set(arch.probabilities) == {
            f"{g}.{k}" for g, _ in space.alpha_groups() for k in space.choice_keys()
        }
    if bridge.default_layout(space, strategy) == "cell":
        assert chosen_ops(arch) == expected_ops(space, "cell", result.choice)
