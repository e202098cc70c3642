"""Block-level spaces (ResNet-50 bottlenecks, ViT-S / PiT-S token mixers): the paper's shipped networks
to the parameter, the supernet under DARTS, and strict records."""

import json
from pathlib import Path

import pytest
import torch
import torchvision
from _spaces import tiny

from pflnas.arch import Architecture, BlockChoice, load_architecture, save_architecture
from pflnas.arch.derive import derive_architecture
from pflnas.cli.main import main
from pflnas.config.search import ArchOptimConfig
from pflnas.errors import ArchitectureError, ConfigError
from pflnas.measure.counting import count_macs, count_parameters
from pflnas.models import PiTBlockNet, ResNetBlockNet, ViTBlockNet, build_network
from pflnas.strategies import StepContext, create_strategy
from pflnas.supernet import build_supernet

ARCHS = Path(__file__).resolve().parents[1] / "experiments" / "archs"


def load(name: str) -> Architecture:
    return load_architecture(ARCHS / f"{name}.json")


# --- golden counts, derived independently of pflnas' modules ------------------------------------------
def _torchvision_r50():
    return torchvision.models.resnet50()


def _tv_spatial_params(tv, only_downsampling: bool = False) -> int:
    """Parameters of torchvision's 3x3 conv + BN (conv2/bn2) in every (or every strided) bottleneck."""
    total = 0
    for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
        for block in layer:
            if only_downsampling and block.conv2.stride != (2, 2):
                continue
            total += sum(p.numel() for m in (block.conv2, block.bn2) for p in m.parameters())
    return total


def _vit_params(dim=384, depth=12, patch=16, grid=14, classes=1000, max_blocks=0, mlp=4) -> int:
    """vit_pf.py's EffTransformer without class token: patch conv, positional embedding, blocks, head."""
    attention = dim * 3 * dim + 3 * dim + dim * dim + dim  # qkv (bias) + proj
    pool_mixer = dim * 3 * dim + 3 * dim + 3 * dim * dim + dim  # Linear(d, 3d) + Linear(3d, d)
    block = 4 * dim + (dim * mlp * dim + mlp * dim) + (mlp * dim * dim + dim)  # 2 LN + MLP
    body = depth * block + (depth - max_blocks) * attention + max_blocks * pool_mixer
    return 3 * patch * patch * dim + dim + grid * grid * dim + body + 2 * dim + dim * classes + classes


def _pit_params(base=48, heads=(3, 6, 12), depths=(2, 6, 4), grid=27, classes=1000, alternate=False) -> int:
    """pit_pf.py's PoolingTransformer without class token (conv pooling between stages)."""
    dims = [base * h for h in heads]
    total = 3 * 16 * 16 * dims[0] + dims[0] + dims[0] * grid * grid
    for s, (d, n) in enumerate(zip(dims, depths)):
        n_max = n // 2 if alternate else 0
        total += _vit_params(d, n, 0, 0, 0, n_max) - 3 * d  # blocks only (drop patch bias, final norm)
        if s + 1 < len(dims):
            total += dims[s + 1] * 9 + dims[s + 1]  # grouped 3x3 conv (groups = d), bias
    return total + 2 * dims[-1] + dims[-1] * classes + classes


def test_r50_family_matches_torchvision_and_the_paper():
    tv = _torchvision_r50()
    tv_params = sum(p.numel() for p in tv.parameters())
    r50, r50_max, r50_hybrid = (
        build_network(load(n), dataset="imagenet") for n in ("r50", "r50_max", "r50_hybrid")
    )
    assert count_parameters(r50) == tv_params == 25_557_032
    assert count_parameters(r50_max) == tv_params - _tv_spatial_params(tv) == 14_232_232
    assert (
        count_parameters(r50_hybrid) == count_parameters(r50_max) + _tv_spatial_params(tv, True) == 17_330_600
    )
    shape = (1, 3, 224, 224)
    macs = [count_macs(m, shape) for m in (r50, r50_max, r50_hybrid)]
    assert macs == [4_089_184_256, 2_239_496_192, 2_586_312_704]
    # The paper's table (Han et al., ICLR 2022): 25.6M / 4.1G, 14.2M / 2.2G, 17.3M / 2.6G.
    table = [(25.6, 4.1), (14.2, 2.2), (17.3, 2.6)]
    for net, m, (p_m, g) in zip((r50, r50_max, r50_hybrid), macs, table):
        assert round(count_parameters(net) / 1e6, 1) == p_m and round(m / 1e9, 1) == g


def test_r50_computes_exactly_torchvision_resnet50():
    tv = _torchvision_r50().eval()
    ours = build_network(load("r50"), dataset="imagenet").eval()
    state = {}
    index = 0
    for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
        for j in range(len(layer)):
            for key, value in layer[j].state_dict().items():
                key = key.replace("conv2.", "spatial.conv.").replace("bn2.", "spatial.bn.")
                state[f"blocks.{index}.{key}"] = value
            index += 1
    for key, value in tv.state_dict().items():
        if key.startswith(("conv1.", "bn1.")):
            state[key.replace("conv1.", "stem.0.").replace("bn1.", "stem.1.")] = value
        elif key.startswith("fc."):
            state[key] = value
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), tv(x), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "expected", "cls"),
    [
        ("vit_s", _vit_params(), ViTBlockNet),
        ("vit_s_max", _vit_params(max_blocks=6), ViTBlockNet),
        ("pit_s", _pit_params(), PiTBlockNet),
        ("pit_s_max", _pit_params(alternate=True), PiTBlockNet),
    ],
)
def test_transformers_match_the_paper_code(name, expected, cls):
    net = build_network(load(name), dataset="imagenet")
    assert isinstance(net, cls) and count_parameters(net) == expected
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_shipped_op_patterns():
    hybrid = load("r50_hybrid")
    for site, block in zip(hybrid.space.sites(), hybrid.blocks):
        assert block.op == ("avg_pool_2x2_conv_3x3" if site.stride == 2 else "max_pool_3x3")
    assert [s.stride for s in hybrid.space.sites()].count(2) == 3
    assert {b.op for b in load("r50_max").blocks} == {"max_pool_3x3"}
    assert [b.op for b in load("vit_s_max").blocks] == ["attention", "max_pool_3x3"] * 6
    pit = [b.op for b in load("pit_s_max").blocks]  # attention first in every stage (depths 2-6-4)
    assert (
        pit
        == ["attention", "max_pool_3x3"]
        + ["attention", "max_pool_3x3"] * 3
        + ["attention", "max_pool_3x3"] * 2
    )
    assert load("r50_max").param_free_share() == 1.0 and load("r50_hybrid").param_free_share() == 13 / 16
    assert load("vit_s_max").param_free_share() == 0.5 and load("r50").param_free_share() == 0.0


def test_cifar_adaptation_and_shared_records():
    space = tiny("resnet50_block").replace(alpha_mode="shared")
    arch = Architecture(
        space,
        blocks=(BlockChoice("normal", "normal", "max_pool_3x3"), BlockChoice("reduce", "reduce", "conv_3x3")),
    )
    net = build_network(arch)  # cifar10: 3x3 stem, no max-pool
    assert isinstance(net, ResNetBlockNet) and isinstance(net.stem[0], torch.nn.Conv2d)
    assert net.stem[0].kernel_size == (3, 3) and len(net.stem) == 3
    assert [type(b.spatial).__name__ for b in net.blocks] == ["MaxPool2d", "ConvBNReLU", "MaxPool2d"]
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="fixed by the space's skeleton"):
        build_network(arch, init_channels=16)


# --- supernet + DARTS on block spaces -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet50_block", "vit_s_mixer", "pit_s_mixer"])
@pytest.mark.parametrize("strategy", ["darts", "darts2"])
def test_darts_on_block_supernets(name, strategy, tmp_path):
    torch.manual_seed(0)
    space = tiny(name)
    net = build_supernet(space, num_classes=10, image_size=32)
    strat = create_strategy(strategy, ArchOptimConfig())
    strat.attach(net)
    weights = net.weight_parameters()
    opt = torch.optim.SGD(weights, lr=0.1, momentum=0.9)

    def loss(batch):
        x, y = batch
        return torch.nn.functional.cross_entropy(net(x), y)

    def virtual_step(params, grads):
        return [0.1 * g for g in grads]

    batch = (torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    before_alpha = [a.detach().clone() for a in net.arch_parameters()]
    before_w = [w.detach().clone() for w in weights]
    strat.arch_step(batch, batch, StepContext(loss, virtual_step, 0.1))
    assert any(not torch.equal(a, b) for a, b in zip(net.arch_parameters(), before_alpha))
    assert all(torch.equal(w, b) for w, b in zip(weights, before_w))
    opt.zero_grad()
    loss(batch).backward()
    opt.step()
    arch = strat.export({"seed": 0})
    assert len(arch.blocks) == len(space.sites())
    for block in arch.blocks:  # only candidates valid at the block's stride
        assert block.op in space.ops_at(space.type_stride(block.type))
    path = save_architecture(arch, tmp_path / "found.json")
    again = load_architecture(path)
    assert again.blocks == arch.blocks and again.probabilities == arch.probabilities
    assert build_network(again)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_reduce_blocks_have_their_own_candidates():
    space = tiny("resnet50_block")
    assert "identity" not in space.ops_at(2) and "avg_pool_2x2_conv_3x3" in space.ops_at(2)
    assert "identity" in space.ops_at(1) and "avg_pool_2x2_conv_3x3" not in space.ops_at(1)
    net = build_supernet(space, 10, image_size=32)
    sizes = {label: p.numel() for label, p in net.named_arch_parameters()}
    assert sizes == {"block0.op": 5, "block1.op": 5, "block2.op": 5}
    probs = {label: {op: 1 / n for op in space.group_ops(label.split(".")[0])} for label, n in sizes.items()}
    arch = derive_architecture(space, probs)
    assert [b.op for b in arch.blocks] == ["conv_3x3"] * 3  # ties: the first listed op


# --- strict records -----------------------------------------------------------------------------------
def _mutate(tmp_path, change):
    data = json.loads((ARCHS / "r50_hybrid.json").read_text())
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["blocks"][3].update(op="identity"), "cannot be placed at a stride-2"),
        (lambda d: d["blocks"][0].update(op="avg_pool_2x2_conv_3x3"), "cannot be placed at a stride-1"),
        (lambda d: d["blocks"][0].update(op="sep_conv_3x3"), "not a candidate"),
        (lambda d: d["blocks"].pop(), "wrong number of blocks"),
        (lambda d: d["blocks"][1].update(name="block7"), "out of place"),
        (lambda d: d["blocks"][1].update(extra=1), "unknown key"),
        (lambda d: d.update(cells=[]), "records 'blocks', not 'cells'"),
        (lambda d: d["space"]["skeleton"].update(depths=[3, 4]), "same length"),
        (lambda d: d["space"].update(layers=20), "cell spaces only"),
        (lambda d: d.update(probabilities={"block3.op": {"identity": 1.0}}), "not in space"),
        (lambda d: d.update(probabilities={"block99.op": {"conv_3x3": 1.0}}), "not an edge"),
    ],
)
def test_bad_block_records_are_refused_with_one_line(tmp_path, capsys, change, message):
    path = _mutate(tmp_path, change)
    with pytest.raises(ArchitectureError, match=message):
        load_architecture(path)
    assert main(["arch", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_arch_show_lists_blocks(capsys):
    assert main(["arch", "show", str(ARCHS / "r50_hybrid.json")]) == 0
    out = capsys.readouterr().out
    assert "block4" in out and "avg_pool_2x2_conv_3x3" in out and "0.81" in out


# --- timm interface, retrain, evaluate, export -------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet50_block", "vit_s_mixer", "pit_s_mixer"])
def test_block_networks_as_timm_models(name):
    import timm

    import pflnas.bridges.timm_models  # noqa: F401  (registers the "pflnas" timm model)

    space = tiny(name)
    arch = Architecture(
        space, blocks=tuple(BlockChoice(s.name, s.type, space.ops_at(s.stride)[-1]) for s in space.sites())
    )
    model = timm.create_model("pflnas", arch=arch).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.forward_head(model.forward_features(x)), model(x), atol=1e-6)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)


@pytest.mark.slow
def test_retrain_evaluate_export_a_block_network(tmp_path, cifar_source, monkeypatch, session_cache, capsys):
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)
    space = tiny("resnet50_block")
    arch = Architecture(
        space,
        blocks=tuple(
            BlockChoice(s.name, s.type, "max_pool_3x3" if s.stride == 1 else "avg_pool_2x2_conv_3x3")
            for s in space.sites()
        ),
    )
    path = save_architecture(arch, tmp_path / "hybrid.json")
    run = tmp_path / "run"
    common = ["--data-dir", cifar_source]
    quick = ["--recipe", "quick", "--set", "model.init_channels=null", "--set", "model.layers=null"]
    quick += ["--set", "model.auxiliary=false", "--set", "schedule.epochs=1", "--set", "data.subset=64"]
    assert main(["retrain", "--arch", str(path), *quick, *common, "--out", str(run)]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["params"] == count_parameters(build_network(arch))
    ckpt = str(run / "best.pt")
    assert main(["evaluate", "--arch", str(path), "--checkpoint", ckpt, *common]) == 0
    assert (
        main(["export", "--arch", str(path), "--checkpoint", ckpt, "--onnx", str(tmp_path / "m.onnx")]) == 0
    )
    assert "parity" in capsys.readouterr().out
    other = save_architecture(load("r50_max"), tmp_path / "other.json")
    assert (
        main(["export", "--arch", str(other), "--checkpoint", ckpt, "--onnx", str(tmp_path / "x.onnx")]) == 2
    )


def test_profile_of_the_shipped_r50_family_defaults_to_imagenet(capsys):
    files = [str(ARCHS / f"{n}.json") for n in ("r50", "r50_max", "r50_hybrid")]
    assert main(["profile", "--arch", *files, "--no-speed", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["params"] for r in results] == [25_557_032, 14_232_232, 17_330_600]
    assert [r["macs"] for r in results] == [4_089_184_256, 2_239_496_192, 2_586_312_704]
    assert all(
        r["network"]["dataset"] == "imagenet" and r["input_shape"] == [1, 3, 224, 224] for r in results
    )
