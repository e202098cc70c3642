"""timm registration (``timm.create_model("pflnas", ...)``) and ONNX export (``pflnas export``)."""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import timm
import torch

import pflnas.export as export_mod
from pflnas.arch.record import Architecture, CellArch, Edge, load_architecture
from pflnas.bridges.timm_models import TimmNetworkCIFAR, TimmNetworkImageNet, pflnas, register_timm_models
from pflnas.cli.main import main
from pflnas.errors import ConfigError, PflnasError
from pflnas.models import AuxOutput, build_network, resolve_network_config
from pflnas.spaces import load_space
from pflnas.trained import load_trained_network

ARCH = Path(__file__).resolve().parents[1] / "experiments" / "archs" / "darts_v2.json"
SMALL = dict(init_channels=8, layers=5)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets and timings: one thread


@pytest.fixture(scope="module")
def arch() -> Architecture:
    return load_architecture(ARCH)


def other_arch(arch: Architecture) -> Architecture:
    """darts_v2 with every sep_conv_3x3 swapped for a sep_conv_5x5 (same keys, other weight shapes)."""
    cells = tuple(
        CellArch(
            c.name,
            c.type,
            tuple(Edge(e.node, e.source, e.op.replace("sep_conv_3x3", "sep_conv_5x5")) for e in c.edges),
            c.concat,
        )
        for c in arch.cells
    )
    return Architecture(arch.space, cells)


def nb201_arch() -> Architecture:
    ops = ["conv_3x3", "skip_connect", "conv_1x1", "avg_pool_3x3", "conv_3x3", "skip_connect"]
    pairs = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    edges = tuple(Edge(n, s, op) for (n, s), op in zip(pairs, ops))
    return Architecture(load_space("nb201"), (CellArch("cell", "normal", edges, (3,)),))


def save_checkpoint(path: Path, arch: Architecture, *, seed: int = 1, ema: bool = False, **settings) -> dict:
    """A checkpoint shaped like 'pflnas retrain' writes (model, network, arch; aux head included)."""
    config = resolve_network_config(arch, **{**SMALL, "auxiliary": True, **settings})
    torch.manual_seed(seed)
    model = build_network(arch, **{k: v for k, v in config.to_dict().items() if k != "image_size"})
    state = {"model": model.state_dict(), "network": config.to_dict(), "arch": arch.to_dict()}
    if ema:
        state["ema"] = {
            f"module.{k}": v + 1 if v.is_floating_point() else v for k, v in state["model"].items()
        }
    torch.save(state, path)
    return state


def assert_same_weights(model: torch.nn.Module, weights: dict, skip_aux: bool = True) -> None:
    own = model.state_dict()
    for k, v in weights.items():
        if skip_aux and k.startswith("auxiliary_head."):
            continue
        assert torch.equal(own[k], v), k


# --- timm ---------------------------------------------------------------------------------------------
def test_registered_once_and_idempotent():
    assert timm.list_models("pflnas*") == ["pflnas"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # timm warns when a name is registered twice
        register_timm_models()
        register_timm_models()
    assert timm.models.model_entrypoint("pflnas") is pflnas
    assert timm.models.get_pretrained_cfg("pflnas").input_size == (3, 32, 32)


@pytest.mark.parametrize("as_object", [False, True], ids=["path", "Architecture"])
def test_create_model_is_build_network(arch, as_object):
    torch.manual_seed(0)
    ref = build_network(arch, num_classes=7, **SMALL).eval()
    torch.manual_seed(0)
    model = timm.create_model("pflnas", arch=arch if as_object else str(ARCH), num_classes=7, **SMALL).eval()
    assert isinstance(model, TimmNetworkCIFAR)
    assert model.state_dict().keys() == ref.state_dict().keys()
    assert_same_weights(model, ref.state_dict(), skip_aux=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, ref(x))
        features = model.forward_features(x)
        assert torch.equal(model.forward_head(features), out)
    assert model.num_classes == 7 and model.get_classifier() is model.classifier
    assert features.shape == (2, model.num_features, *model.pretrained_cfg["pool_size"])
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)


def test_timm_settings_map_to_pflnas_ones(arch):
    model = timm.create_model("pflnas", arch=arch, drop_path_rate=0.2, in_chans=1, auxiliary=True, **SMALL)
    assert model.drop_path_prob == 0.2 and model.stem[0].in_channels == 1
    assert model.pretrained_cfg["input_size"] == (1, 32, 32) and len(model.pretrained_cfg["mean"]) == 1
    assert isinstance(model(torch.randn(2, 1, 32, 32)), AuxOutput)  # training mode, auxiliary head
    cfg = timm.data.resolve_model_data_config(timm.create_model("pflnas", arch=arch, **SMALL))
    assert cfg["mean"] == (0.4914, 0.4822, 0.4465) and cfg["input_size"] == (3, 32, 32)


@pytest.mark.parametrize("how", ["kwarg", "tag"])
def test_imagenet_variant(arch, how):
    kwargs = dict(arch=arch, init_channels=8, layers=3)
    if how == "kwarg":
        model = timm.create_model("pflnas", dataset="imagenet", **kwargs).eval()
    else:
        model = timm.create_model("pflnas.imagenet", **kwargs).eval()
    assert isinstance(model, TimmNetworkImageNet) and model.num_classes == 1000
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["fixed_input_size"] and cfg["first_conv"] == "stem0.0"
    assert model.get_submodule(cfg["first_conv"]).in_channels == 3
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (1, model.num_features, *cfg["pool_size"])
        assert torch.equal(model.forward_head(features), model(x))


def test_nb201_fashion_mnist_variant():
    model = timm.create_model("pflnas.fashion-mnist", arch=nb201_arch(), layers=1).eval()
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (1, 28, 28) and cfg["mean"] == (0.2860,)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, model.num_features, *cfg["pool_size"])
        assert torch.equal(model.forward_head(features), model(x))


def test_reset_classifier(arch):
    model = timm.create_model("pflnas", arch=arch, auxiliary=True, **SMALL)
    model.reset_classifier(5)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.logits.shape == (2, 5) and out.aux_logits.shape == (2, 5) and model.num_classes == 5
    model.reset_classifier(0)
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, model.num_features)
    clone = copy.deepcopy(model)  # what timm's ModelEma does
    assert type(clone) is type(model) and clone.num_features == model.num_features
    with pytest.raises(ConfigError, match="averaging"):
        model.reset_classifier(3, global_pool="max")


def test_bad_timm_arguments(arch):
    with pytest.raises(ConfigError, match="needs arch"):
        timm.create_model("pflnas")
    with pytest.raises(ConfigError, match="does not take features_only"):
        timm.create_model("pflnas", arch=arch, features_only=True)
    with pytest.raises(ConfigError, match="dropout"):
        timm.create_model("pflnas", arch=arch, drop_rate=0.1)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        timm.create_model("pflnas", arch=arch, pretrained=True)
    with pytest.raises(ConfigError, match="disagree"):
        timm.create_model("pflnas.imagenet", arch=arch, dataset="cifar10")
    with pytest.raises(PflnasError, match="no such file"):
        timm.create_model("pflnas", arch="no/such/found.json")


def test_timm_loads_retrain_checkpoints(arch, tmp_path):
    ckpt = tmp_path / "best.pt"
    state = save_checkpoint(ckpt, arch)
    by_kwarg = timm.create_model("pflnas", arch=arch, checkpoint=ckpt)  # settings come from the checkpoint
    by_file = timm.create_model(
        "pflnas", arch=arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(ckpt)), auxiliary=True
    )
    by_timm = timm.create_model("pflnas", arch=arch, auxiliary=True, checkpoint_path=str(ckpt), **SMALL)
    assert by_kwarg.auxiliary_head is None and by_kwarg.pretrained_cfg["file"] == str(ckpt)
    assert_same_weights(by_kwarg, state["model"])
    assert_same_weights(by_file, state["model"], skip_aux=False)
    assert_same_weights(by_timm, state["model"], skip_aux=False)
    with pytest.raises(ConfigError, match="contradicts"):
        timm.create_model("pflnas", arch=arch, checkpoint=ckpt, layers=6)
    with pytest.raises(PflnasError, match="another architecture"):
        timm.create_model("pflnas", arch=other_arch(arch), checkpoint=ckpt)


# --- ONNX export --------------------------------------------------------------------------------------
def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["export", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def onnx_logits(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


@pytest.mark.slow  # the dynamo exporter takes ~10 s on two cores
def test_cli_export_with_checkpoint_default_exporter(arch, tmp_path, capsys):
    ckpt, out = tmp_path / "best.pt", tmp_path / "net.onnx"
    state = save_checkpoint(ckpt, arch)
    rc, stdout, err = run_cli(capsys, "--arch", ARCH, "--checkpoint", ckpt, "--onnx", out)
    assert rc == 0, err
    assert "dynamo exporter, opset 18" in stdout and "parity" in stdout and err == ""
    model = build_network(arch, **SMALL).eval()
    model.load_state_dict({k: v for k, v in state["model"].items() if "auxiliary" not in k})
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(onnx_logits(out, x), model(x).numpy(), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "net.onnx"]  # no temp or .data files


def test_cli_export_without_checkpoint_warns(tmp_path, capsys):
    out = tmp_path / "net.onnx"
    rc, stdout, err = run_cli(
        capsys,
        "--arch",
        ARCH,
        "--onnx",
        out,
        *("--init-channels", 8, "--layers", 5, "--exporter", "torchscript"),
    )
    assert rc == 0, err
    assert err.strip() == "pflnas export: warning: no --checkpoint; exporting randomly initialised weights"
    assert "torchscript exporter" in stdout and "input [batch, 3, 32, 32]" in stdout
    assert "parity    max |onnx - torch|" in stdout
    assert onnx_logits(out, torch.randn(4, 3, 32, 32)).shape == (4, 10)


def test_export_api_imagenet_parity_and_ema(arch, tmp_path):
    ckpt = tmp_path / "last.pt"
    state = save_checkpoint(ckpt, arch, ema=True, dataset="imagenet", num_classes=5, layers=3)
    model, config = load_trained_network(arch, ckpt, ema=True)
    assert config.dataset == "imagenet" and config.num_classes == 5 and not config.auxiliary
    assert_same_weights(model, {k.removeprefix("module."): v for k, v in state["ema"].items()})
    exported, report = export_mod.export_onnx(
        model, config.input_shape(1), tmp_path / "net.onnx", exporter="torchscript"
    )
    assert report is not None and report.ok and report.batch_sizes == (1, 2)
    assert report.max_abs_diff <= 1e-4 * max(1.0, report.logits_scale)
    assert exported.exporter == "torchscript" and (tmp_path / "net.onnx").read_bytes() == exported.data


def test_auto_exporter_below_opset_18_uses_torchscript(arch):
    model = build_network(arch, **SMALL)
    exported = export_mod.to_onnx(model, (1, 3, 32, 32), opset=17)
    assert exported.exporter == "torchscript" and exported.opset == 17
    with pytest.raises(ConfigError, match="opset >= 18"):
        export_mod.to_onnx(model, (1, 3, 32, 32), opset=17, exporter="dynamo")


def test_failed_parity_writes_nothing(arch, tmp_path, monkeypatch):
    bad = export_mod.ParityReport(max_abs_diff=1.0, logits_scale=0.1, limit=1e-4, batch_sizes=(1, 2))
    monkeypatch.setattr(export_mod, "check_onnx_parity", lambda *a, **k: bad)
    with pytest.raises(PflnasError, match="disagrees"):
        export_mod.export_onnx(
            build_network(arch, **SMALL), (1, 3, 32, 32), tmp_path / "net.onnx", exporter="torchscript"
        )
    assert list(tmp_path.iterdir()) == []


def one_error_line(rc: int, stdout: str, err: str, match: str) -> None:
    assert rc == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("pflnas export: error: "), err
    assert match in err, err


def test_checkpoint_of_another_architecture_is_one_error_line(arch, tmp_path, capsys):
    out = tmp_path / "net.onnx"
    recorded, bare = tmp_path / "recorded.pt", tmp_path / "bare.pt"
    save_checkpoint(recorded, other_arch(arch))
    torch.save({"model": torch.load(recorded, weights_only=True)["model"]}, bare)  # no network, no arch
    common = ("--arch", ARCH, "--onnx", out, "--exporter", "torchscript")
    one_error_line(*run_cli(capsys, *common, "--checkpoint", recorded), "trained on another architecture")
    one_error_line(
        *run_cli(capsys, *common, "--checkpoint", bare, "--init-channels", 8, "--layers", 5),
        "does not fit NetworkCIFAR (C=8, layers=5, 10 classes) (wrong-shape keys: ",
    )
    one_error_line(*run_cli(capsys, *common, "--checkpoint", bare), "missing keys")  # default C=36
    assert not out.exists()


def test_contradicting_flags_are_one_error_line(arch, tmp_path, capsys):
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, arch)
    rc, stdout, err = run_cli(
        capsys, "--arch", ARCH, "--checkpoint", ckpt, "--onnx", tmp_path / "x.onnx", "--num-classes", 100
    )
    one_error_line(rc, stdout, err, "num_classes=100 (the checkpoint has 10) contradicts")


def test_missing_and_unreadable_files(tmp_path, capsys):
    out = tmp_path / "net.onnx"
    text, empty_dict = tmp_path / "notes.pt", tmp_path / "empty.pt"
    text.write_text("not a checkpoint")
    torch.save({"weights": {}}, empty_dict)
    one_error_line(*run_cli(capsys, "--arch", tmp_path / "none.json", "--onnx", out), "no such file")
    for ckpt, match in [
        (tmp_path / "none.pt", "no such file"),
        (text, "cannot be read"),
        (empty_dict, "no 'model' state dict"),
    ]:
        one_error_line(*run_cli(capsys, "--arch", ARCH, "--checkpoint", ckpt, "--onnx", out), match)
    assert not out.exists()


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_missing_export_dependencies(tmp_path, capsys, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import <missing>` raise ImportError
    rc, stdout, err = run_cli(capsys, "--arch", ARCH, "--onnx", tmp_path / "net.onnx")
    one_error_line(rc, stdout, err, f"needs the '{missing}' package: pip install 'pflnas[export]'")
    if missing == "onnxruntime":  # the check is the only user of onnxruntime
        rc, _, err = run_cli(
            capsys,
            "--arch",
            ARCH,
            "--onnx",
            tmp_path / "net.onnx",
            "--no-check",
            "--exporter",
            "torchscript",
            *("--init-channels", 8, "--layers", 5),
        )
        assert rc == 0 and "pflnas export: warning" in err
