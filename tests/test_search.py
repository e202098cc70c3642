"""End-to-end search through the CLI: found.json, metrics, errors (kill and resume: test_crash_safety)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pflnas.arch import load_architecture
from pflnas.cli.main import main

TINY = [
    "--set",
    "space.init_channels=4",
    "--set",
    "space.layers=3",
    "--set",
    "data.subset=64",
    "--set",
    "data.batch_size=16",
    "--set",
    "data.eval_limit=32",
    "--set",
    "run.progress=false",
]


@pytest.fixture(autouse=True)
def _cache(monkeypatch, session_cache):
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)


def _search(cifar_source, out, *extra):
    return main(
        ["search", "--space", "cell_v1", "--data-dir", cifar_source, "--out", str(out), *TINY, *extra]
    )


@pytest.mark.slow
def test_cli_search_writes_valid_run(tmp_path, cifar_source, capsys):
    out = tmp_path / "run"
    # min_entropy=1 flags every epoch (alphas are never exactly uniform): the config reaches the live check
    assert _search(cifar_source, out, "--epochs", "2", "--set", "collapse.min_entropy=1.0") == 0
    assert "found architecture" in capsys.readouterr().out
    arch = load_architecture(out / "found.json")
    assert arch.space.name == "cell_v1" and arch.space.alpha_mode == "individual"
    assert len(arch.cells) == 3 and all(len(c.edges) == 8 for c in arch.cells)
    assert 0.0 <= arch.param_free_share() <= 1.0
    assert arch.provenance["strategy"] == "darts" and arch.provenance["epochs"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    labels = {f"cell{c}.edge{n}<-{s}" for c in range(3) for n in range(2, 6) for s in range(n)}
    for r in rows:
        assert set(r["probs"]) == labels
        assert all(abs(sum(d.values()) - 1) < 1e-5 for d in r["probs"].values())
        assert {"train_loss", "val_acc", "arch_loss", "lr", "param_free_share", "param_free_chance"} <= set(r)
        assert r["param_free_chance"] == pytest.approx((8 * 0.6 + 2 * 8 * 0.4716667) / 24, abs=1e-6)
        assert set(r["edge_entropy"]) == labels and 0.0 <= r["param_free_mass"] <= 1.0
        # parameter-free skips only: a reduction cell's stride-2 skip_connect is a FactorizedReduce
        skips = sum(r["skip_count_by_type"].values())
        assert r["skip_count"] == skips <= r["op_counts"].get("skip_connect", 0)
        assert r["collapse"]["flagged"] and r["collapse"]["reasons"][-1].startswith("low_entropy:")
    assert set(arch.probabilities) == labels
    assert (out / "config.yaml").exists() and (out / "checkpoint.pt").exists()


SHRINK = {
    "cell_v1": "run.epochs=2",  # PC-DARTS: a warm-up epoch, then an architecture epoch
    "darts": "space.layers=3",
    "nb201": "space.layers=1",
    "resnet50_block": "space.skeleton={depths: [1, 2], widths: [4, 8], stem_width: 8}",
    "vit_s_mixer": "space.skeleton={dim: 12, depth: 2, heads: 3}",
    "pit_s_mixer": "space.skeleton={base_dim: 4, heads: [1, 2], depths: [1, 2]}",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "space, strategy",
    [
        ("darts", "darts2"),
        ("nb201", "gdas"),
        ("resnet50_block", "darts"),
        ("vit_s_mixer", "darts2"),
        ("pit_s_mixer", "gdas"),
        ("cell_v1", "pcdarts"),
    ],
)
def test_other_spaces_and_second_order(tmp_path, cifar_source, space, strategy):
    out = tmp_path / "run"
    rc = main(
        [
            "search",
            "--space",
            space,
            "--strategy",
            strategy,
            "--data-dir",
            cifar_source,
            "--out",
            str(out),
            "--epochs",
            "1",
            *(TINY if space in ("cell_v1", "darts", "nb201") else TINY[4:]),
            "--set",
            SHRINK[space],
        ]
    )
    assert rc == 0
    arch = load_architecture(out / "found.json")
    assert arch.space.name == space and arch.provenance["strategy"] == strategy
    if strategy == "pcdarts":
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["arch_step"] for r in rows] == [False, True] and rows[0]["arch_loss"] is None
        assert set(arch.provenance["edge_normalization"]) == {
            f"cell{c}.edge{n}<-{s}" for c in range(3) for n in range(2, 6) for s in range(n)
        }
    if arch.space.is_block:
        assert len(arch.blocks) == len(arch.space.sites()) and not arch.cells
        row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        assert set(row["probs"]) == {f"{b.name}.op" for b in arch.blocks}


def _run_cli(args, env=None):
    return subprocess.run([sys.executable, "-m", "pflnas", *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--space", "nope"], "unknown search space"),
        (["--strategy", "magic"], "unknown strategy"),
        (["--set", "run.epochs=-1"], "run.epochs must be >= 1"),
        (["--set", "data.batch_size=0"], "data.batch_size must be >= 1"),
        (["--set", "run.epoch=3"], "unknown config key"),
        (["--set", "run.epochs=three"], "must be an integer"),
        (["--device", "cuda"], "no CUDA GPU"),
        (["--epochs", "x"], "invalid int value"),
        (["--preset", "huge"], "unknown preset"),
        (["--config", "/nonexistent.yaml"], "does not exist"),
        (["--strategy", "gdas", "--set", "run.compile=true"], "run.compile does not suit 'gdas'"),
    ],
)
def test_bad_inputs_one_line_exit_2(tmp_path, cifar_source, args, message):
    if args == ["--device", "cuda"]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    base = ["search", "--space", "cell_v1", "--data-dir", cifar_source, "--out", str(tmp_path / "o")]
    res = _run_cli([*base, *args])  # a later --space overrides the base's
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_non_empty_out_dir_refused(tmp_path, cifar_source):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    res = _run_cli(["search", "--space", "cell_v1", "--data-dir", cifar_source, "--out", str(out)])
    assert res.returncode == 2 and "not empty" in res.stderr
    assert (out / "keep.txt").read_text() == "precious"


def test_resume_rejects_other_flags(tmp_path):
    res = _run_cli(["search", "--resume", str(tmp_path), "--epochs", "3"])
    assert res.returncode == 2 and "--resume continues a run" in res.stderr


def test_resume_of_a_non_run_dir(tmp_path):
    res = _run_cli(["search", "--resume", str(tmp_path)])
    assert res.returncode == 2 and "not a pflnas search run directory" in res.stderr
