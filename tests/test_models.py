"""Derived networks: golden parameter/MAC counts against the original DARTS and NAS-Bench-201 code,
forward contract, drop-path, the individual-record cell mapping, and every space x alpha mode."""

import random

import pytest
import torch
from _spaces import tiny

from pflnas.arch.darts_genotype import architecture_from_genotype
from pflnas.arch.derive import derive_architecture
from pflnas.arch.record import Architecture, CellArch, Edge
from pflnas.errors import ArchitectureError, ConfigError
from pflnas.measure.counting import _flops_on_meta, _flops_on_zeros, count_macs, count_parameters
from pflnas.models import AuxOutput, build_network, stage_map
from pflnas.models.darts import drop_path
from pflnas.ops import create_op
from pflnas.spaces import list_spaces, load_space

# Genotypes as DARTS prints them: quark0/darts cnn/genotypes.py (DARTS_V1, DARTS_V2) and
# yuhuixu1993/PC-DARTS genotypes.py (PC_DARTS_cifar).
DARTS_V1 = (
    "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), "
    "('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 0), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
    "('avg_pool_3x3', 0)], "
    "reduce_concat=[2, 3, 4, 5])"
)
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
    "('max_pool_3x3', 1)], "
    "reduce_concat=[2, 3, 4, 5])"
)
PC_DARTS_CIFAR = (
    "Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1), "
    "('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)], "
    "normal_concat=range(2, 6), reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), "
    "('sep_conv_5x5', 2), ('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 2)], "
    "reduce_concat=range(2, 6))"
)
GENOTYPES = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "PC_DARTS_cifar": PC_DARTS_CIFAR}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets and timings: one thread


# --- golden numbers ----------------------------------------------------------------------------------
# Computed by running the ORIGINAL code (torch 2.14.1, CPU), not this package:
#   DARTS: quark0/darts cnn/model.py @ 28419acc (master: AuxiliaryHeadImageNet without BatchNorm2d(768)),
#   cnn/operations.py as upstream, genotypes above; `cd /tmp/darts_ref && python compute.py`, counting
#   sum(p.numel() for n, p in m.named_parameters() if "auxiliary" not in n) (= utils.count_parameters_in_MB
#   x 1e6) for NetworkCIFAR(36, 10, 20, True, g) and NetworkImageNet(48, 1000, 14, True, g); "total" counts
#   every parameter; MACs = FlopCounterMode(display=False).get_total_flops() / 2 in eval mode under
#   torch.no_grad on a zero input of batch 1 (32x32 / 224x224).
#   NB201: D-X-Y/AutoDL-Projects lib/models/cell_infers/tiny_network.py @ e59eb804, cells.py @ 9a83814a,
#   cell_operations.py @ 076f9c2d; `cd /tmp/nb201_ref && python compute.py`:
#   TinyNetwork(16, 5, Structure.str2structure(arch), 10), sum(p.numel() for p in m.parameters()).
# Published: DARTS (2nd order) 3.3M on CIFAR-10 and 4.7M on ImageNet; PC-DARTS 3.6M / 5.3M.
GOLDEN_DARTS = {  # (genotype, dataset): (params excluding the auxiliary head, all params)
    ("DARTS_V2", "cifar10"): (3_349_342, 3_825_768),
    ("DARTS_V2", "imagenet"): (4_718_752, 5_979_528),
    ("DARTS_V1", "cifar10"): (3_169_414, 3_645_840),
    ("DARTS_V1", "imagenet"): (4_510_432, 5_771_208),
    ("PC_DARTS_cifar", "cifar10"): (3_634_678, 4_111_104),
    ("PC_DARTS_cifar", "imagenet"): (5_270_560, 6_531_336),
}
GOLDEN_DARTS_MACS = {"cifar10": 528_359_040, "imagenet": 529_911_552}  # DARTS_V2
GOLDEN_NB201 = {  # arch string: (params, MACs at 1x3x32x32)
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|": (
        1_288_506,
        184_730_240,
    ),
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|": (
        129_306,
        15_647_360,
    ),
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|": (73_306, 7_783_040),
    "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|": (559_386, 78_561_920),
}


def nb201_arch(arch_str: str) -> Architecture:
    """A shared nb201 record from an NAS-Bench-201 arch string (``nor_conv_*`` is our ``conv_*``)."""
    edges = []
    for node, part in enumerate(arch_str.strip("|").split("|+|"), start=1):
        for token in part.split("|"):
            op, source = token.split("~")
            edges.append(Edge(node, int(source), op.replace("nor_conv", "conv")))
    return Architecture(load_space("nb201"), (CellArch("cell", "normal", tuple(edges), (3,)),))


def random_arch(space, seed=0) -> Architecture:
    """A valid record of ``space`` derived from made-up probabilities."""
    rng = random.Random(seed)
    probs = {}
    for group, _ in space.alpha_groups():
        ops = space.group_ops(group)
        for key in space.choice_keys():
            weights = [rng.random() for _ in ops]
            probs[f"{group}.{key}"] = {op: w / sum(weights) for op, w in zip(ops, weights, strict=True)}
    return derive_architecture(space, probs, {"source": "test", "seed": seed})


@pytest.mark.parametrize(("genotype", "dataset"), sorted(GOLDEN_DARTS))
def test_darts_parameter_counts_match_the_original_code(genotype, dataset):
    net = build_network(architecture_from_genotype(GENOTYPES[genotype]), dataset=dataset, auxiliary=True)
    without_aux, total = GOLDEN_DARTS[(genotype, dataset)]
    assert count_parameters(net) == without_aux
    assert count_parameters(net, exclude_auxiliary=False) == total
    assert count_parameters(
        build_network(architecture_from_genotype(GENOTYPES[genotype]), dataset=dataset)
    ) == (without_aux)


@pytest.mark.parametrize("dataset", ["cifar10", "imagenet"])
def test_darts_v2_macs_match_the_original_code(dataset):
    net = build_network(architecture_from_genotype(DARTS_V2), dataset=dataset, auxiliary=True)
    size = 32 if dataset == "cifar10" else 224
    assert count_macs(net, (1, 3, size, size)) == GOLDEN_DARTS_MACS[dataset]


@pytest.mark.parametrize("arch_str", sorted(GOLDEN_NB201))
def test_nb201_counts_match_the_original_code(arch_str):
    net = build_network(nb201_arch(arch_str))
    params, macs = GOLDEN_NB201[arch_str]
    assert count_parameters(net) == params
    assert count_macs(net, (1, 3, 32, 32)) == macs


# --- forward contract ------------------------------------------------------------------------------
def test_darts_cifar_forward_and_aux_output():
    net = build_network(architecture_from_genotype(DARTS_V2), init_channels=4, layers=3, auxiliary=True)
    x = torch.randn(2, 3, 32, 32)  # the CIFAR auxiliary head expects 8x8 after two reductions
    net.train()
    out = net(x)
    assert isinstance(out, AuxOutput)
    assert out.logits.shape == (2, 10) and out.aux_logits.shape == (2, 10)
    (out.logits.logsumexp(1).sum() + 0.4 * out.aux_logits.logsumexp(1).sum()).backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    with torch.no_grad():
        y = net(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 10)


def test_darts_imagenet_forward_and_aux_output():
    net = build_network(
        architecture_from_genotype(PC_DARTS_CIFAR),
        dataset="imagenet",
        num_classes=7,
        init_channels=8,
        layers=5,
    )
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 7)
    net = build_network(
        architecture_from_genotype(DARTS_V1), dataset="imagenet", init_channels=4, layers=3, auxiliary=True
    )
    out = net.train()(torch.randn(2, 3, 224, 224))
    assert out.logits.shape == (2, 1000) and out.aux_logits.shape == (2, 1000)


def test_without_auxiliary_training_returns_logits():
    net = build_network(architecture_from_genotype(DARTS_V2), init_channels=4, layers=4).train()
    assert isinstance(net(torch.randn(2, 3, 16, 16)), torch.Tensor)
    assert not any("auxiliary" in name for name, _ in net.named_parameters())


def test_nb201_forward_returns_logits():
    net = build_network(nb201_arch(sorted(GOLDEN_NB201)[0]), num_classes=100, layers=1)
    assert net.train()(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert net.eval()(torch.randn(2, 3, 16, 16)).shape == (2, 100)


def test_eval_mode_is_deterministic_and_seeded_builds_are_identical():
    arch = architecture_from_genotype(DARTS_V2)
    torch.manual_seed(0)
    a = build_network(arch, init_channels=4, layers=4, auxiliary=True, drop_path=0.3).eval()
    torch.manual_seed(0)
    b = build_network(arch, init_channels=4, layers=4, auxiliary=True, drop_path=0.3).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ya, ya2, yb = a(x), a(x), b(x)
    assert torch.equal(ya, ya2)
    assert torch.equal(ya, yb)


def test_drop_path_only_in_training():
    arch = architecture_from_genotype(DARTS_V2)
    net = build_network(arch, init_channels=4, layers=4, drop_path=0.5).train()
    assert net.drop_path_prob == 0.5
    x = torch.randn(4, 3, 16, 16)
    torch.manual_seed(1)
    y1 = net(x)
    torch.manual_seed(2)
    y2 = net(x)
    assert not torch.allclose(y1, y2)
    net.drop_path_prob = 0.0  # the loop may schedule it; 0 means a deterministic training forward
    torch.manual_seed(1)
    z1 = net(x)
    torch.manual_seed(2)
    assert torch.equal(z1, net(x))


def test_drop_path_drops_whole_samples_and_rescales():
    torch.manual_seed(0)
    y = drop_path(torch.ones(1000, 2, 3, 3), 0.25)
    per_sample = y.flatten(1)
    assert torch.all((per_sample == 0).all(1) | torch.isclose(per_sample, torch.tensor(1 / 0.75)).all(1))
    assert 0.15 < (per_sample[:, 0] == 0).float().mean() < 0.35


# --- individual records: network cell -> search cell ---------------------------------------------------
def test_stage_map_rule():
    search = ["normal", "normal", "reduce", "normal", "normal", "reduce", "normal", "normal"]
    assert stage_map(search, search) == list(range(8))
    deeper = ["normal"] * 6 + ["reduce"] + ["normal"] * 6 + ["reduce"] + ["normal"] * 6
    assert stage_map(search, deeper) == [0, 0, 0, 1, 1, 1, 2, 3, 3, 3, 4, 4, 4, 5, 6, 6, 6, 7, 7, 7]
    assert stage_map(search, ["normal", "reduce", "normal", "reduce", "normal"]) == [0, 2, 3, 5, 6]
    with pytest.raises(ArchitectureError, match="no normal cell"):
        stage_map(["normal", "reduce", "reduce"], ["normal", "reduce", "normal", "reduce", "normal"])


def _check_cells_follow_record(net, arch, names):
    assert [cell.name for cell in net.cells] == names
    for cell in net.cells:
        record = arch.cell(cell.name)
        edges = sorted(record.edges, key=lambda e: e.node)
        for op, e in zip(cell.ops, edges, strict=True):
            stride = 2 if cell.reduction and e.source < 2 else 1
            assert type(op) is type(create_op(e.op, 4, 4, stride))


@pytest.mark.parametrize(
    ("layers", "names"),
    [
        (8, [f"cell{i}" for i in range(8)]),
        (5, ["cell0", "cell2", "cell3", "cell5", "cell6"]),
        (20, [f"cell{i}" for i in [0, 0, 0, 1, 1, 1, 2, 3, 3, 3, 4, 4, 4, 5, 6, 6, 6, 7, 7, 7]]),
    ],
)
def test_individual_darts_record_maps_network_cells(layers, names):
    arch = random_arch(load_space("cell_v1"), seed=3)  # individual alphas, 8 search layers
    net = build_network(arch, init_channels=4, layers=layers)
    _check_cells_follow_record(net, arch, names)
    if layers < 20:
        with torch.no_grad():
            assert net.eval()(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def test_shared_darts_record_uses_normal_and_reduce():
    arch = architecture_from_genotype(DARTS_V2)
    net = build_network(arch, init_channels=4, layers=7)
    _check_cells_follow_record(
        net, arch, ["normal", "normal", "reduce", "normal", "reduce", "normal", "normal"]
    )


def test_individual_record_without_normal_search_cells_in_a_stage_is_refused():
    arch = random_arch(load_space("cell_v1").replace(layers=3))  # search cells: normal, reduce, reduce
    with pytest.raises(ArchitectureError, match="stage 1"):
        build_network(arch, init_channels=4, layers=8)


@pytest.mark.parametrize(("per_stage", "picked"), [(5, list(range(15))), (2, [0, 2, 5, 7, 10, 12])])
def test_individual_nb201_record_maps_network_cells(per_stage, picked):
    arch = random_arch(load_space("nb201").replace(alpha_mode="individual"), seed=1)
    net = build_network(arch, init_channels=4, layers=per_stage)
    names = [c.name for c in net.cells if hasattr(c, "name")]
    assert names == [f"cell{i}" for i in picked]


# --- every space and alpha mode ------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_spaces())
@pytest.mark.parametrize("alpha_mode", ["individual", "shared"])
def test_every_space_builds_and_runs(name, alpha_mode):
    space = load_space(name)
    if space.is_block:  # a tiny skeleton; block networks take their shape from it
        arch = random_arch(tiny(name).replace(alpha_mode=alpha_mode), seed=7)
        net, size = build_network(arch), 32
    else:
        arch = random_arch(space.replace(alpha_mode=alpha_mode), seed=7)
        net = build_network(arch, init_channels=4, layers=3 if arch.space.kind == "darts_cell" else 1)
        size = 16
    y = net.train()(torch.randn(2, 3, size, size))
    assert y.shape == (2, 10)
    y.logsumexp(1).sum().backward()


# --- settings ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "mnist"}, "unknown dataset"),
        ({"layers": 2}, "layers >= 3"),
        ({"init_channels": 0}, "positive"),
        ({"num_classes": -1}, "positive"),
        ({"drop_path": 1.0}, r"\[0, 1\)"),
        ({"dataset": "imagenet", "init_channels": 7}, "even init_channels"),
    ],
)
def test_bad_darts_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_network(architecture_from_genotype(DARTS_V2), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "imagenet"}, "no 'imagenet'-style"),
        ({"auxiliary": True}, "auxiliary"),
        ({"drop_path": 0.2}, "drop"),
    ],
)
def test_bad_nb201_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_network(nb201_arch(sorted(GOLDEN_NB201)[0]), **kwargs)


# --- profile --------------------------------------------------------------------------------------------
def test_count_macs_meta_and_real_paths_agree_and_mode_is_restored():
    net = build_network(architecture_from_genotype(PC_DARTS_CIFAR), init_channels=4, layers=5, auxiliary=True)
    shape = (1, 3, 32, 32)
    assert _flops_on_meta(net.eval(), shape) == _flops_on_zeros(net, shape)
    net.train()
    macs = count_macs(net, shape)
    assert net.training
    assert macs * 2 == _flops_on_meta(net.eval(), shape) and macs > 0
