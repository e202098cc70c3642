"""``pflnas study`` runs the seeds of an arm as seed groups (``pflnas search --seeds``) where the strategy and
config allow it: the plan shows one grouped command, each member lands in the run directory it would have
alone with the numbers it would have alone (float32: to a relative 1e-4; the float64 equality to 1e-10 is
tests/test_seed_group.py's, and float32 rounding may flip a near-tied choice of this tiny search), gdas
still runs one search per seed, ``--batch-seeds`` caps or turns off grouping, and a group resumes as one."""

from __future__ import annotations

import json
import math
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from _tiny_runs import tiny_archive

from pflnas.cli.main import main
from pflnas.strategies import create_strategy, list_strategies, seed_group_strategies
from pflnas.train.group_rules import leave_group

ARM = "cell_v1-darts-default"
TINY = {  # cell_v1 at C=4 with 3 cells; 32 images for weights, 32 for alphas, batch 8: 4 steps an epoch
    "space.init_channels": 4,
    "space.layers": 3,
    "data.subset": 64,
    "data.batch_size": 8,
    "data.eval_limit": 16,
    "run.epochs": 1,  # float32: a group's last bits differ, and more epochs of a tiny search amplify them
}


def _study_file(root: Path, **top: Any) -> Path:
    data = {
        "name": "bs",
        "search": {"set": dict(TINY)},
        "grid": {"spaces": ["cell_v1"], "strategies": ["darts", "gdas"], "seeds": [0, 1, 2]},
        **top,
    }
    path = root / f"bs{len(list(root.glob('bs*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    return tiny_archive(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def _cache(monkeypatch, session_cache):
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)  # the study's searches inherit it


def _dry(capsys, path: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    argv = ["study", str(path), "--out", str(out), "--dry-run", "--device", "cpu", "--jobs", "2", *extra]
    try:
        rc = main(argv)
    except SystemExit as stop:  # argparse's own errors
        rc = stop.code
    res = capsys.readouterr()
    return rc, res.out, res.err


def _commands(text: str) -> list[list[str]]:
    return [shlex.split(line) for line in text.splitlines() if line.startswith("    ")]


def test_registry_says_which_strategies_group_as_their_classes_do():
    from pflnas.config.search import ArchOptimConfig

    assert seed_group_strategies() == ["darts", "darts2", "pcdarts"]
    for name in list_strategies():
        assert create_strategy(name, ArchOptimConfig()).seed_groups == (name in seed_group_strategies())


def test_dry_run_shows_one_grouped_command_and_gdas_alone(tmp_path, capsys):
    path, out = _study_file(tmp_path), tmp_path / "study"
    rc, text, err = _dry(capsys, path, out)
    assert rc == 0, err
    commands = _commands(text)
    grouped = [c for c in commands if "--seeds" in c]
    assert len(grouped) == 1 and len(commands) == 4  # the darts group, then gdas' three searches
    group = grouped[0]
    assert group[group.index("--seeds") + 1] == "0,1,2" and "--seed" not in group
    assert group[group.index("--out") + 1] == str(out / "runs" / f"{ARM}-s{{seed}}")
    for seed in (0, 1, 2):
        assert f"would start   {ARM}-s{seed}  (seed group {ARM}-s{{0,1,2}})" in text.splitlines()
    gdas = [c for c in commands if "gdas" in c]
    assert [c[c.index("--seed") + 1] for c in gdas] == ["0", "1", "2"]
    assert "cell_v1-gdas-default: one search per seed, no seed groups: strategy 'gdas' has no grouped" in text
    assert "6 would start; 1 seed group(s)" in text and not out.exists()

    # --batch-seeds caps a group; the study file's batch_seeds too, and the flag wins over it
    for extra, top in ((("--batch-seeds", "2"), {}), ((), {"batch_seeds": 2})):
        rc, text, _ = _dry(capsys, _study_file(tmp_path, **top), out, *extra)
        darts = [c for c in _commands(text) if "darts" in c]
        assert rc == 0 and [c[c.index("--seeds") + 1] for c in darts[:1]] == ["0,1"]
        assert "--seeds" not in darts[1] and darts[1][darts[1].index("--seed") + 1] == "2"
    for extra, top in ((("--batch-seeds", "1"), {}), (("--batch-seeds", "1"), {"batch_seeds": 3})):
        rc, text, _ = _dry(capsys, _study_file(tmp_path, **top), out, *extra)
        assert rc == 0 and len(_commands(text)) == 6 and "--seeds" not in text
        assert "seed group" not in text and "no seed groups" not in text

    # a config the group refuses runs its seeds one search each, and says why
    path = _study_file(tmp_path, grid={"spaces": ["cell_v1"], "strategies": ["darts"], "seeds": [0, 1]})
    data = yaml.safe_load(path.read_text())
    data["search"]["set"]["run.nonfinite"] = "skip"
    path.write_text(yaml.safe_dump(data))
    rc, text, _ = _dry(capsys, path, out)
    assert rc == 0 and "--seeds" not in text and len(_commands(text)) == 2
    assert f"{ARM}: one search per seed, no seed groups: run.nonfinite=skip" in text


@pytest.mark.parametrize(
    "args, top, message",
    [
        (["--batch-seeds", "0"], {}, "--batch-seeds must be >= 1"),
        (["--batch-seeds", "-3"], {}, "--batch-seeds must be >= 1"),
        (["--batch-seeds", "two"], {}, "argument --batch-seeds: invalid int value: 'two'"),
        ([], {"batch_seeds": 0}, "batch_seeds must be >= 1"),
        ([], {"batch_seeds": "all"}, "batch_seeds must be an integer"),
    ],
)
def test_bad_batch_seeds_exit_2_with_one_line(tmp_path, capsys, args, top, message):
    out = tmp_path / "study"
    rc, _, err = _dry(capsys, _study_file(tmp_path, **top), out, *args)
    assert rc == 2 and message in err and err.startswith("pflnas study: error: ")
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_batch_seeds_is_for_search_studies(tmp_path, capsys):
    layer = Path(__file__).parents[1] / "experiments" / "studies" / "layer_study.yaml"
    rc, _, err = _dry(capsys, layer, tmp_path / "study", "--batch-seeds", "2")
    assert rc == 2 and "--batch-seeds groups the searches of a search study; this is a layer study" in err
    assert len(err.strip().splitlines()) == 1


def test_a_group_is_one_process_and_each_member_is_reported(tmp_path):
    from pflnas.study.config import StudyRun
    from pflnas.study.plan import PlannedRun
    from pflnas.study.runner import _execute

    runs = [StudyRun(f"{ARM}-s{i}", "cell_v1", "darts", "default", i, {}) for i in range(2)]
    members = [PlannedRun(r, tmp_path / r.run_id, "start") for r in runs]
    command = [sys.executable, "-c", "print('the group ran')"]
    group = PlannedRun(runs[0], members[0].run_dir, "start", command, members=members)
    lines: list[str] = []
    done, failed = _execute([group], 1, lines.append, progress=False)
    assert not done and [(p.run.run_id, why) for p, why in failed] == [
        (r.run_id, f"exit 0 but no valid found.json in seed group {ARM}-s{{0,1}}") for r in runs
    ]
    assert lines[0].startswith(f"[1/1] start   {ARM}-s{{0,1}}  (fresh, 2 seeds as one grouped search; log: ")
    assert lines[1].startswith(f"[1/1] failed  {ARM}-s{{0,1}}") and "the group ran" in lines[1]
    first = (members[0].run_dir / "log.txt").read_text().splitlines()
    second = (members[1].run_dir / "log.txt").read_text().splitlines()
    assert first == [f"$ {shlex.join(command)}", "the group ran"]
    assert second == [first[0], f"(seed group {ARM}-s{{0,1}}: its output is in {members[0].log})"]
    for r in runs:
        assert json.loads((tmp_path / r.run_id / "run.json").read_text()) == r.record()


# --- end to end ----------------------------------------------------------------------------------------


def _differences(got: Any, want: Any, where: str = "") -> list[str]:
    """Where ``got`` differs from ``want``: numbers beyond a relative 1e-4, anything else at all."""
    if isinstance(want, dict) and isinstance(got, dict):
        if set(got) != set(want):
            return [f"{where}: keys {sorted(set(got) ^ set(want))}"]
        return [d for k in want for d in _differences(got[k], want[k], f"{where}/{k}")]
    if isinstance(want, list) and isinstance(got, list) and len(got) == len(want):
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in _differences(g, w, f"{where}[{i}]")]
    numbers = (int, float)
    if isinstance(got, numbers) and isinstance(want, numbers) and not isinstance(got, bool):
        if math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6):
            return []
    elif got == want:
        return []
    return [f"{where}: {got!r} vs {want!r}"]


NUMBERS = (
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "arch_loss",
    "val_loss",
    "val_acc",
    "mean_entropy",
    "probs",
)


def _results(run_dir: Path) -> dict[str, Any]:
    """The run's numbers: per-epoch losses, accuracies and op probabilities, and found.json's probabilities
    (not the choices derived from them: in float32 the tiny search's near-tied ops may flip)."""
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    found = json.loads((run_dir / "found.json").read_text())
    rows = [{k: row[k] for k in NUMBERS if k in row} for row in metrics]
    return {"probabilities": found["probabilities"], "metrics": rows}


@pytest.fixture(scope="module")
def study_run(tmp_path_factory, source, session_cache, one_thread):
    """The study run once with seed groups (darts: one group of 3; gdas: 3 searches), and the darts runs'
    results from the commands the same study runs with --batch-seeds 1 (in this process: no start-up)."""
    root = tmp_path_factory.mktemp("bs-study")
    path, out = _study_file(root), root / "study"
    flags = ["--out", str(out), "--data-dir", source, "--device", "cpu", "--jobs", "2"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PFLNAS_CACHE", session_cache)
        reference = {}
        for command in (c for c in _commands_of(main, path, flags) if "darts" in c):
            seed = int(command[command.index("--seed") + 1])
            command[command.index("--out") + 1] = str(root / "reference" / f"s{seed}")
            assert main(command[3:]) == 0
            reference[seed] = _results(root / "reference" / f"s{seed}")
        rc = main(["study", str(path), *flags])
    return rc, path, out, flags, reference


def _commands_of(main_fn, path: Path, flags: list[str]) -> list[list[str]]:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main_fn(["study", str(path), *flags, "--dry-run", "--batch-seeds", "1"]) == 0
    return _commands(buffer.getvalue())


@pytest.mark.slow
def test_grouped_members_equal_their_searches_alone(study_run):
    rc, _, out, _, reference = study_run
    assert rc == 0, [p.read_text()[-2000:] for p in out.glob("runs/*/log.txt")]
    dirs = [out / "runs" / f"{ARM}-s{seed}" for seed in (0, 1, 2)]
    for seed, run_dir in enumerate(dirs):
        lines = _differences(_results(run_dir), reference[seed])
        assert not lines, "\n".join(lines[:20])
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["resolved_group"]["seeds"] == [0, 1, 2]
        assert json.loads((run_dir / "run.json").read_text())["seed"] == seed
    first, *others = [(d / "log.txt").read_text().splitlines() for d in dirs]
    assert "--seeds 0,1,2" in first[0] and any("found architecture" in line for line in first)
    for log in others:  # the command, and where the group's output is
        assert log[0] == first[0] and str(dirs[0] / "log.txt") in log[1] and len(log) == 2


@pytest.mark.slow
def test_gdas_runs_one_search_per_seed_in_the_same_study(study_run):
    rc, _, out, _, _ = study_run
    assert rc == 0
    for seed in (0, 1, 2):
        run_dir = out / "runs" / f"cell_v1-gdas-default-s{seed}"
        assert "resolved_group" not in yaml.safe_load((run_dir / "config.yaml").read_text())
        command = (run_dir / "log.txt").read_text().splitlines()[0]
        assert f"--seed {seed} " in command and "--seeds" not in command
        assert json.loads((run_dir / "found.json").read_text())["provenance"]["seed"] == seed


@pytest.mark.slow
def test_an_interrupted_group_resumes_as_one(study_run, tmp_path, capsys):
    rc, path, src, flags, _ = study_run
    assert rc == 0
    out = tmp_path / "study"
    shutil.copytree(src, out)
    flags = [*flags[:1], str(out), *flags[2:]]
    dirs = [out / "runs" / f"{ARM}-s{seed}" for seed in (0, 1, 2)]
    before = [json.loads((d / "found.json").read_text()) for d in dirs]

    # one member complete: the others resume alone (a group resumes only as a whole)
    for d in dirs[1:]:
        (d / "found.json").unlink()
    capsys.readouterr()
    assert main(["study", str(path), *flags, "--dry-run"]) == 0
    text = capsys.readouterr().out
    resumes = [c for c in _commands(text) if "--resume" in c]
    assert [c[-1] for c in resumes] == [str(d) for d in dirs[1:]]
    assert text.count("alone: its seed group does not resume as one here") == 2
    probe = tmp_path / "probe"
    shutil.copytree(dirs[1], probe)
    leave_group(probe)  # what the study does before resuming it alone
    config = yaml.safe_load((probe / "config.yaml").read_text())
    assert "resolved_group" not in config
    assert config == {
        k: v
        for k, v in yaml.safe_load((dirs[1] / "config.yaml").read_text()).items()
        if k != "resolved_group"
    }

    # every member resumable: one process resumes the group (unless --batch-seeds is below its size)
    (dirs[0] / "found.json").unlink()
    assert main(["study", str(path), *flags, "--dry-run", "--batch-seeds", "2"]) == 0
    assert len([c for c in _commands(capsys.readouterr().out) if "--resume" in c]) == 3
    assert main(["study", str(path), *flags, "--dry-run"]) == 0
    text = capsys.readouterr().out
    resumes = [c for c in _commands(text) if "--resume" in c]
    assert len(resumes) == 1 and resumes[0][-1] == str(dirs[0])
    assert f"would resume  {ARM}-s2  (from checkpoint.pt, seed group {ARM}-s{{0,1,2}})" in text
    assert main(["study", str(path), *flags]) == 0
    assert "3 done, 3 skipped, 0 failed" in capsys.readouterr().out
    for d, found in zip(dirs, before):
        assert json.loads((d / "found.json").read_text())["cells"] == found["cells"]
    log = (dirs[0] / "log.txt").read_text().splitlines()
    assert "--seeds 0,1,2" in log[0] and log[-1].startswith("found architecture")
    assert any(line.startswith("$ ") and line.endswith(f"search --resume {dirs[0]}") for line in log)
