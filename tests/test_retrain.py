"""Retraining through the CLI: learning, exact resume after SIGKILL mid-epoch, torchrun DDP, recipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pflnas.cli.main import main
from pflnas.config.loader import build_config
from pflnas.errors import ConfigError
from pflnas.train.recipe import RetrainConfig, list_recipes, recipe_layer, validate_retrain_config

ARCH = str(Path(__file__).parent.parent / "experiments" / "archs" / "darts_v2.json")
SMALL = [
    "--set",
    "model.init_channels=8",
    "--set",
    "model.layers=5",
    "--set",
    "run.progress=false",
    "--set",
    "run.tensorboard=false",
]


@pytest.fixture(autouse=True)
def _cache(monkeypatch, session_cache):
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)


def _cli(args, env=None, **kw):
    return subprocess.run(
        [sys.executable, "-m", "pflnas", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_loads_and_validates(name):
    cfg = build_config(RetrainConfig, [recipe_layer(name)])
    validate_retrain_config(cfg)
    assert cfg.source


@pytest.mark.parametrize(
    "body, message",
    [
        ("optim: {lrr: 0.1}\n", "unknown config key"),
        ("optim: {lr: fast}\n", "optim.lr must be a number"),
        ("schedule: {epochs: 0}\n", "schedule.epochs must be >= 1"),
        ("run: {amp: fp8}\n", "run.amp must be one of"),
        ("data: [1, 2]\n", "data must be a mapping"),
    ],
)
def test_bad_recipe_rejected(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    res = _cli(["retrain", "--arch", ARCH, "--recipe", str(path), "--out", str(tmp_path / "o")])
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_recipe_errors_in_process():
    with pytest.raises(ConfigError, match="unknown recipe"):
        recipe_layer("no_such_recipe")


@pytest.mark.slow
def test_retrain_learns_and_evaluate_agrees(tmp_path, learnable_source, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "retrain",
            "--arch",
            ARCH,
            "--recipe",
            "quick",
            "--data-dir",
            learnable_source,
            "--out",
            str(out),
            "--epochs",
            "3",
            "--set",
            "data.subset=1000",
            *SMALL,
        ]
    )
    assert rc == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["top1"] > 0.2  # chance is 0.1
    assert {"lr", "top5", "images_per_s", "epoch_time", "eval_loss"} <= set(rows[0])
    assert (out / "last.pt").exists() and (out / "best.pt").exists() and (out / "result.json").exists()
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--arch",
                ARCH,
                "--checkpoint",
                str(out / "last.pt"),
                "--data-dir",
                learnable_source,
                "--device",
                "cpu",
                "--json",
            ]
        )
        == 0
    )
    evaluated = json.loads(capsys.readouterr().out)
    assert abs(evaluated["top1"] - rows[-1]["top1"]) < 1e-6


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


def _init_weights(overrides: list[str]) -> dict[str, torch.Tensor]:
    """The initial weights of a retrain run with these overrides (the loop seeds before building)."""
    from pflnas.arch import load_architecture
    from pflnas.train.distributed import DistInfo
    from pflnas.train.retrain import RetrainRun

    cfg = build_config(RetrainConfig, [recipe_layer("quick")], overrides)
    run = RetrainRun(cfg, load_architecture(ARCH), "/nonexistent", DistInfo(0, 1, 0, torch.device("cpu")))
    run.setup()
    return {k: v.clone() for k, v in run.model_without_ddp.state_dict().items()}


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path, cifar_source):
    """2 gloo processes x 16 images vs 1 process x 32: same data order, augmentation and gradient averaging.
    BatchNorm statistics are per process on CPU (SyncBatchNorm is GPU-only), so the runs are not bitwise
    equal; stated tolerance: the weight difference is under 3/4 of the size of the training update."""
    sets = [
        "schedule.epochs=1",
        "data.subset=128",
        "data.batch_size=32",
        "model.auxiliary=false",
        "model.drop_path=0.0",
        "data.cutout=0",
        "model.init_channels=8",
        "model.layers=5",
        "run.progress=false",
        "run.tensorboard=false",
        "run.device=cpu",
    ]
    args = ["--arch", ARCH, "--recipe", "quick", "--data-dir", cifar_source]
    for item in sets:
        args += ["--set", item]
    one, two = tmp_path / "one", tmp_path / "two"
    assert _cli(["retrain", *args, "--out", str(one)]).returncode == 0
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29533",
            "-m",
            "pflnas",
            "retrain",
            *args,
            "--out",
            str(two),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((two / "result.json").read_text())["world_size"] == 2
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 1  # only rank 0 writes
    init = _init_weights([*sets, f"data.data_dir={cifar_source}"])
    a, b = _final_weights(one), _final_weights(two)
    keys = [k for k in a if a[k].is_floating_point() and "running" not in k]
    norm = lambda d: sum(float((v.float() ** 2).sum()) for v in d.values()) ** 0.5  # noqa: E731
    update = norm({k: a[k] - init[k] for k in keys})
    gap = norm({k: b[k] - a[k] for k in keys})
    assert update > 0
    assert gap < 0.75 * update, (gap, update)


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path, cifar_source):
    res = _cli(
        [
            "retrain",
            "--arch",
            ARCH,
            "--recipe",
            "quick",
            "--data-dir",
            cifar_source,
            "--device",
            "cpu",
            "--set",
            "run.sync_bn=true",
            "--set",
            "data.subset=100",  # fits the small fake CIFAR too
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert res.returncode == 2 and "sync_bn needs CUDA" in res.stderr
