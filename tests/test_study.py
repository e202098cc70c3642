"""``pflnas study``: study-file validation, grid expansion, planning (skip / resume / start), and tiny real
studies run end to end through the CLI (complete, skip on re-run, resume, a failing run, SIGTERM)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pflnas.arch import load_architecture
from pflnas.cli.main import main
from pflnas.study import expand_grid, load_study
from pflnas.study.runner import threads_per_run

FOUND_JSON = Path(__file__).parents[1] / "experiments" / "archs" / "darts_v2.json"
# the TINY search of tests/test_search.py, one epoch
TINY = {
    "space.init_channels": 4,
    "space.layers": 3,
    "data.subset": 64,
    "data.batch_size": 16,
    "data.eval_limit": 32,
    "run.epochs": 1,
}


@pytest.fixture(autouse=True)
def _cache(monkeypatch, session_cache):
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)  # the study's searches inherit it


def _study(tmp_path: Path, name: str = "t", **changes) -> Path:
    data = {
        "name": name,
        "description": "a test study",
        "search": {"set": dict(TINY)},
        "grid": {"spaces": ["cell_v1"], "strategies": ["darts"], "seeds": [0, 1]},
    }
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        cur = data
        for part in parents:
            cur = cur.setdefault(part, {})
        cur[last] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"grd": {}}, "unknown config key(s) grd"),
        ({"grid__seed": [0]}, "unknown config key(s) grid.seed"),
        ({"grid__seeds": [0, 0]}, "grid.seeds repeats 0"),
        ({"grid__seeds": []}, "grid.seeds is empty"),
        ({"grid__seeds": ["a"]}, "grid.seeds[0] must be an integer"),
        ({"grid__seeds": [-1]}, "grid.seeds[0] must be >= 0"),
        ({"grid__spaces": ["nope"]}, "grid.spaces[0]: unknown search space 'nope'"),
        ({"grid__strategies": ["magic"]}, "grid.strategies[0]: unknown strategy 'magic'"),
        ({"grid__settings": {}}, "grid.settings is empty"),
        ({"grid__settings": {"a-b": {}}}, "grid.settings: name 'a-b' may hold only"),
        ({"grid__settings": {"x": {"space.alpha_mod": "shared"}}}, "grid.settings.x: unknown config key(s)"),
        (
            {"grid__settings": {"x": {"space.alpha_mode": "both"}}},
            "grid.settings.x: space 'cell_v1': alpha_mode",
        ),
        ({"grid__settings": {"x": {"run.seed": 3}}}, "grid.settings.x: run.seed cannot be set in a study"),
        ({"search__set": {"run.epochs": "three"}}, "search.set: run.epochs must be an integer"),
        ({"search__set": {"data.batch_size": 0}}, "search.set: data.batch_size must be >= 1"),
        ({"search__set": {"data.data_dir": "/x"}}, "pass --data-dir to pflnas study"),
        ({"search__set": {"epochs": 3}}, "search.set: key 'epochs' must look like section.key"),
        ({"search__set": {"data.dataset": "imagenet9"}}, "search.set: unknown dataset 'imagenet9'"),
        ({"search__preset": "huge"}, "unknown preset 'huge'"),
        ({"name": ""}, "name '' must be a non-empty name"),
        ({"jobs": "two"}, "jobs must be an integer"),
        ({"jobs": 0}, "jobs must be >= 1"),
    ],
)
def test_bad_study_files_one_line_exit_2(tmp_path, capsys, changes, message):
    out = tmp_path / "out"
    assert main(["study", str(_study(tmp_path, **changes)), "--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("pflnas study: error: ")
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--jobs", "0"], "--jobs must be >= 1"),
        (["--data-dir", "/nonexistent/cifar"], "--data-dir /nonexistent/cifar does not exist"),
        (["--device", "tpu"], "device 'tpu'"),
    ],
)
def test_bad_flags_one_line_exit_2(tmp_path, capsys, args, message):
    assert main(["study", str(_study(tmp_path)), "--out", str(tmp_path / "o"), "--dry-run", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_study_file(tmp_path, capsys):
    assert main(["study", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_grid_expansion_order_ids_and_overrides(tmp_path):
    path = _study(
        tmp_path,
        search__preset="quick",
        grid__spaces=["cell_v1", "darts"],
        grid__strategies=["darts", "darts2"],
        grid__settings={"ind": {"space.alpha_mode": "individual", "run.epochs": 2}, "sh": None},
    )
    runs = expand_grid(load_study(path))
    assert [r.run_id for r in runs[:5]] == [
        "cell_v1-darts-ind-s0",
        "cell_v1-darts-ind-s1",
        "cell_v1-darts-sh-s0",
        "cell_v1-darts-sh-s1",
        "cell_v1-darts2-ind-s0",
    ]
    assert len(runs) == 16 and len({r.run_id for r in runs}) == 16
    assert runs[-1].run_id == "darts-darts2-sh-s1"
    assert runs[0].overrides == {**TINY, "space.alpha_mode": "individual", "run.epochs": 2}  # setting wins
    assert runs[2].overrides == TINY
    assert runs[0].record() == {
        "run_id": "cell_v1-darts-ind-s0",
        "space": "cell_v1",
        "strategy": "darts",
        "seed": 0,
        "setting": "ind",
        "overrides": runs[0].overrides,
        "preset": "quick",
    }


def test_default_setting_and_space_file(tmp_path):
    space = tmp_path / "my_space.yaml"
    shutil.copy(Path(__file__).parents[1] / "search_spaces" / "cell_v1.yaml", space)
    runs = expand_grid(load_study(_study(tmp_path, grid__spaces=[str(space)])))
    assert [r.run_id for r in runs] == ["my_space-darts-default-s0", "my_space-darts-default-s1"]


def _run_dir(out: Path, run_id: str) -> Path:
    return out / "runs" / run_id


def _dry(capsys, path, out, *extra) -> tuple[int, str, str]:
    rc = main(["study", str(path), "--out", str(out), "--dry-run", *extra])
    res = capsys.readouterr()
    return rc, res.out, res.err


def test_dry_run_reports_skip_resume_start_and_runs_nothing(tmp_path, capsys):
    path = _study(tmp_path, grid__seeds=[0, 1, 2, 3])
    study = load_study(path)
    runs = {r.seed: r for r in expand_grid(study)}
    out = tmp_path / "study"
    one = "--batch-seeds", "1"  # one search per seed (seed groups: tests/test_study_batch_seeds.py)
    rc, text, _ = _dry(capsys, path, out, *one)
    assert rc == 0 and text.count("\nwould start ") == 4 and not out.exists()

    out.mkdir()
    (out / "study.yaml").write_text(yaml.safe_dump(study.to_dict()))
    for seed, files in {0: ["found.json"], 1: ["checkpoint.pt", "config.yaml"], 2: ["log.txt"]}.items():
        d = _run_dir(out, runs[seed].run_id)
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps(runs[seed].record()))
        for name in files:
            if name == "found.json":
                shutil.copy(FOUND_JSON, d / name)
            else:
                (d / name).write_text("x")
    rc, text, _ = _dry(capsys, path, out, *one)
    assert rc == 0
    lines = text.splitlines()
    assert "would skip    cell_v1-darts-default-s0  (complete: found.json)" in lines
    assert "would resume  cell_v1-darts-default-s1  (from checkpoint.pt)" in lines
    assert (
        "would start   cell_v1-darts-default-s2" in lines
        and "would start   cell_v1-darts-default-s3" in lines
    )
    commands = [line.strip() for line in lines if line.startswith("    ")]
    assert len(commands) == 3  # none for the complete run
    assert commands[0].endswith(f"-m pflnas search --resume {_run_dir(out, runs[1].run_id)}")
    for seed, command in zip((2, 3), commands[1:]):
        assert f"--seed {seed} " in command and "--set run.progress=false --set run.threads=" in command
        assert "--set space.init_channels=4" in command and "--set run.epochs=1" in command
        assert command.endswith(f"--out {_run_dir(out, runs[seed].run_id)} --overwrite")
    assert not _run_dir(out, runs[3].run_id).exists()

    # a run directory holding another run is refused, or replaced with --overwrite
    other = {**runs[2].record(), "overrides": {"run.epochs": 5}}
    (_run_dir(out, runs[2].run_id) / "run.json").write_text(json.dumps(other))
    rc, _, err = _dry(capsys, path, out, *one)
    assert rc == 2 and "holds another run" in err and runs[2].run_id in err
    rc, text, _ = _dry(capsys, path, out, "--overwrite", *one)
    assert rc == 0 and "would start   cell_v1-darts-default-s2  (replaces a run with other settings)" in text
    assert "would skip    cell_v1-darts-default-s0" in text  # a complete run that still matches is kept

    # a different study in the same directory is refused; a new description is not a different study
    (_run_dir(out, runs[2].run_id) / "run.json").write_text(json.dumps(runs[2].record()))
    rc, _, err = _dry(capsys, _study(tmp_path, grid__seeds=[0, 1, 2, 3], description="new words"), out)
    assert rc == 0, err
    rc, _, err = _dry(capsys, _study(tmp_path, grid__seeds=[0, 1, 2]), out)
    assert rc == 2 and "holds a different study (it differs in grid)" in err and "--overwrite" in err


@pytest.mark.parametrize("name, runs", [("quick", 6), ("paper_nas", 160)])
def test_shipped_study_files_are_valid(tmp_path, capsys, name, runs):
    path = Path(__file__).parents[1] / "experiments" / "studies" / f"{name}.yaml"
    rc, text, err = _dry(capsys, path, tmp_path / "o")
    assert rc == 0, err
    assert (
        text.count("\nwould start ") == runs and f"0 would skip, 0 would resume, {runs} would start" in text
    )


def test_non_study_directory_refused(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    for extra in ((), ("--overwrite",)):  # pflnas never writes into a folder it did not write
        rc, _, err = _dry(capsys, _study(tmp_path), out, *extra)
        assert rc == 2 and "is not a pflnas run directory" in err and "--overwrite" not in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# --- end to end ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, cifar_source, session_cache):
    """A real two-run study (seeds 0 and 1 of cell_v1, one tiny epoch each), run once for the module."""
    root = tmp_path_factory.mktemp("study")
    path, out = _study(root), root / "study"
    env_before = os.environ.get("PFLNAS_CACHE")
    os.environ["PFLNAS_CACHE"] = session_cache
    try:
        rc = main(["study", str(path), "--out", str(out), "--data-dir", cifar_source, "--jobs", "2"])
    finally:
        if env_before is None:
            del os.environ["PFLNAS_CACHE"]
        else:
            os.environ["PFLNAS_CACHE"] = env_before
    return rc, path, out


@pytest.mark.slow
def test_tiny_study_completes_and_rerun_skips(tiny_study, cifar_source, capsys):
    rc, path, out = tiny_study
    assert rc == 0, [p.read_text() for p in out.glob("runs/*/log.txt")]
    assert yaml.safe_load((out / "study.yaml").read_text()) == yaml.safe_load(
        yaml.safe_dump(load_study(path).to_dict())
    )
    for seed in (0, 1):
        run_dir = _run_dir(out, f"cell_v1-darts-default-s{seed}")
        record = json.loads((run_dir / "run.json").read_text())
        assert record["seed"] == seed and record["setting"] == "default" and record["overrides"] == TINY
        arch = load_architecture(run_dir / "found.json")
        assert arch.provenance["seed"] == seed
        assert arch.provenance["config"]["run"]["threads"] == threads_per_run(2)
        assert "--set run.progress=false" in (run_dir / "log.txt").read_text().splitlines()[0]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/found.json")}
    capsys.readouterr()
    assert main(["study", str(path), "--out", str(out), "--data-dir", cifar_source]) == 0
    text = capsys.readouterr().out
    assert "0 done, 2 skipped, 0 failed" in text and text.count("skip ") == 2
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/found.json")}


@pytest.mark.slow
def test_checkpoint_without_found_json_is_resumed(tiny_study, tmp_path, cifar_source, capsys):
    _, path, src = tiny_study
    out = tmp_path / "study"
    shutil.copytree(src, out)
    run_dir = _run_dir(out, "cell_v1-darts-default-s1")
    (run_dir / "found.json").unlink()
    rc, text, _ = _dry(capsys, path, out)
    assert "would skip    cell_v1-darts-default-s0" in text
    assert "would resume  cell_v1-darts-default-s1" in text
    assert main(["study", str(path), "--out", str(out), "--data-dir", cifar_source]) == 0
    assert "1 done, 1 skipped, 0 failed" in capsys.readouterr().out
    log = (run_dir / "log.txt").read_text().splitlines()
    assert any(line.startswith("$ ") and line.endswith(f"search --resume {run_dir}") for line in log)
    assert log[0].startswith("$ ") and "--resume" not in log[0]  # the first launch's lines are kept
    assert load_architecture(run_dir / "found.json").provenance["seed"] == 1


@pytest.mark.slow
def test_failing_run_exits_1_and_names_its_log(tmp_path, cifar_source, capsys):
    # a subset larger than the training set passes the up-front checks and fails once the data is loaded
    path = _study(tmp_path, grid__seeds=[0], grid__settings={"ok": {}, "bad": {"data.subset": 10_000_000}})
    out = tmp_path / "study"
    assert main(["study", str(path), "--out", str(out), "--data-dir", cifar_source, "--jobs", "2"]) == 1
    res = capsys.readouterr()
    bad_log = _run_dir(out, "cell_v1-darts-bad-s0") / "log.txt"
    assert "1 done, 0 skipped, 1 failed" in res.out
    assert "cell_v1-darts-bad-s0 (exit 2, log: " in res.err and str(bad_log) in res.err
    assert "data subset must be between" in bad_log.read_text()
    assert (_run_dir(out, "cell_v1-darts-ok-s0") / "found.json").is_file()


@pytest.mark.slow
def test_sigterm_stops_the_children_and_the_study_resumes(tmp_path, cifar_source, session_cache, capsys):
    path = _study(tmp_path, grid__seeds=[0], search__set={**TINY, "run.epochs": 20})
    out = tmp_path / "study"
    args = [sys.executable, "-m", "pflnas", "study", str(path), "--out", str(out), "--data-dir", cifar_source]
    env = {**os.environ, "PFLNAS_CACHE": session_cache}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = _run_dir(out, "cell_v1-darts-default-s0") / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume from their last checkpoint: cell_v1-darts-default-s0" in err
    assert f"re-run the same command to continue: pflnas study {path} --out {out}" in err
    assert not (checkpoint.parent / "found.json").exists()
    rc, text, _ = _dry(capsys, path, out, "--data-dir", cifar_source)
    assert rc == 0 and "would resume  cell_v1-darts-default-s0" in text
