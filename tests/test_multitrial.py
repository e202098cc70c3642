"""Multi-trial search on Optuna: the architecture encoding, the samplers, the Pareto front, a worker killed
mid-trial, and ``pflnas search --strategy random`` end to end. A fake evaluator (a fixed function of the
architecture) stands in for training everywhere but the CLI test, so the file runs in seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from _spaces import tiny

from pflnas.arch import load_architecture
from pflnas.arch.record import Architecture
from pflnas.cli.main import main
from pflnas.errors import ConfigError
from pflnas.multitrial import (
    ArchRandomSampler,
    TrialRecord,
    architecture_params,
    choose,
    open_storage,
    resolve_objectives,
    run_trials,
    search_space,
    suggest_architecture,
)
from pflnas.multitrial.objectives import dominates
from pflnas.ops import get_op

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


def fake_evaluator(arch: Architecture) -> dict[str, float]:
    """Deterministic scores: accuracy rewards conv ops, 'params' counts trainable choices."""
    ops = [d.op for d in arch.decisions() if not get_op(d.op).is_zero]
    convs = sum("conv" in op for op in ops)
    weights = sum(op.startswith(("conv", "dw_conv")) for op in ops)
    salt = sum(len(op) * (i + 1) for i, op in enumerate(d.op for d in arch.decisions())) % 97
    accuracy = 0.1 + 0.8 * convs / max(len(ops), 1) + salt / 10_000
    return {"accuracy": accuracy, "params": float(weights), "latency_ms": 1.0 + len(ops) - weights / 2}


@pytest.mark.parametrize("name", ["cell_v1", "darts", "nb201", "resnet50_block", "vit_s_mixer"])
def test_every_sampled_architecture_validates_and_round_trips(name):
    space = tiny(name)
    study = optuna.create_study(sampler=ArchRandomSampler(search_space(space), seed=0))
    seen_inputs = set()
    for _ in range(25):
        trial = study.ask()
        arch = suggest_architecture(trial, space)
        again = Architecture.from_dict(json.loads(json.dumps(arch.to_dict())))  # validates in full
        assert again.decisions() == arch.decisions()
        assert architecture_params(arch) == trial.params
        if not space.is_block and space.keep_edges:  # the chosen input pairs are the kept edges
            for cell in arch.cells:
                last = max(space.node_ids())
                kept = sorted(e.source for e in cell.edges if e.node == last)
                assert ",".join(map(str, kept)) == trial.params[f"{cell.name}.node{last}.inputs"]
                seen_inputs.add(tuple(kept))
        study.tell(trial, 0.5)
    if not space.is_block and space.keep_edges:
        assert len(seen_inputs) > 3  # edge selection is searched, not fixed to the first sources


def _evolve(seed: int, n_trials: int = 24, population: int = 6):
    return run_trials(
        tiny("cell_v1"),
        "evolution",
        fake_evaluator,
        n_trials=n_trials,
        seed=seed,
        population=population,
        sample_size=3,
    )


def test_evolution_is_seeded_and_mutates_one_choice_of_a_population_member():
    first, again, other = _evolve(0), _evolve(0), _evolve(1)
    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    assert [t.params for t in first.trials] != [t.params for t in other.trials]
    trials = first.trials
    assert len(first.complete) == 24 and all(t.parent is None for t in trials[:6])
    for t in trials[6:]:
        assert t.parent is not None and t.number - 6 <= t.parent < t.number  # from the aged population
        parent = trials[t.parent].params
        assert sum(parent[k] != v for k, v in t.params.items()) == 1
    best = max(t.values[0] for t in trials)
    assert first.best is not None and first.best.values == (best,)
    # evolution improves on its random initial population with this evaluator
    assert best > max(t.values[0] for t in trials[:6])


def test_nsga2_pareto_front_is_non_dominated_and_seeded():
    def search(seed):
        return run_trials(
            tiny("nb201"), "nsga2", fake_evaluator, n_trials=20, seed=seed,
            objectives=("accuracy", "params"), population=6,
        )  # fmt: skip

    result = search(0)
    objs = resolve_objectives(("accuracy", "params"))
    front, done = result.pareto, result.complete
    assert len(done) == 20 and front and result.best in front
    for p in front:
        assert not any(dominates(t.values, p.values, objs) for t in done)
    on_front = {p.number for p in front}
    for t in (t for t in done if t.number not in on_front):
        assert any(dominates(p.values, t.values, objs) for p in front)
    assert [p.values[1] for p in front] == sorted(p.values[1] for p in front)
    assert [t.params for t in search(0).trials] == [t.params for t in result.trials]


def test_pareto_choice_is_the_point_nearest_the_ideal():
    objs = resolve_objectives(("accuracy", "latency"))

    def rec(n, acc, lat):
        return TrialRecord(n, "COMPLETE", {}, (acc, lat), {}, None)

    front = [rec(0, 0.50, 1.0), rec(1, 0.88, 2.0), rec(2, 0.90, 10.0)]
    assert choose(front, objs).number == 1  # the knee, not the most accurate
    assert choose([rec(0, 0.5, 1.0), rec(1, 0.9, 3.0)], objs).number == 1  # a tie goes to accuracy


def test_a_study_refuses_another_search(tmp_path):
    storage = str(tmp_path / "s.journal")
    run_trials(tiny("nb201"), "random", fake_evaluator, n_trials=2, seed=0, storage=storage, study_name="s")
    with pytest.raises(ConfigError, match="belongs to another search"):
        run_trials(
            tiny("nb201"), "evolution", fake_evaluator, n_trials=2, seed=0, storage=storage, study_name="s"
        )
    resumed = run_trials(
        tiny("nb201"), "random", fake_evaluator, n_trials=3, seed=0, storage=storage, study_name="s"
    )
    assert [t.number for t in resumed.complete] == [0, 1, 2]  # continued, not restarted


WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from _spaces import tiny
    from test_multitrial import fake_evaluator
    from pflnas.multitrial import run_trials

    calls = 0
    def hangs_on_third(arch):
        global calls
        calls += 1
        if calls == 3:
            Path({marker!r}).write_text("running")
            time.sleep(300)
        return fake_evaluator(arch)

    run_trials(tiny("nb201"), "random", hangs_on_third, n_trials=5, seed=0, storage={storage!r},
               study_name="kill", heartbeat_interval=1, grace_period=2)
    """
)


def test_a_trial_whose_worker_is_killed_is_failed_and_retried(tmp_path):
    storage, marker = str(tmp_path / "trials.journal"), tmp_path / "third-trial-running"
    script = WORKER.format(tests=str(REPO / "tests"), marker=str(marker), storage=storage)
    worker = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert worker.poll() is None, f"the worker exited early: {worker.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the worker never reached its third trial"
            time.sleep(0.1)
        time.sleep(0.5)
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()
        worker.stderr.close()
    study = optuna.load_study(study_name="kill", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage)))  # fmt: skip
    killed = study.trials[2]
    assert killed.state == optuna.trial.TrialState.RUNNING and len(study.trials) == 3
    time.sleep(2.5)  # past the grace period: the killed trial's heartbeat is now stale

    result = run_trials(
        tiny("nb201"), "random", fake_evaluator, n_trials=5, seed=0, storage=storage, study_name="kill",
        heartbeat_interval=1, grace_period=2,
    )  # fmt: skip
    states = {t.number: t.state for t in result.trials}
    assert states[2] == "FAIL" and set(states.values()) == {"COMPLETE", "FAIL"}
    retries = [t for t in result.trials if t.retry_of == 2]
    assert len(retries) == 1 and retries[0].complete and retries[0].params == killed.params
    assert [t.number for t in result.complete][:2] == [0, 1]  # the dead worker's finished trials stay
    assert len(result.complete) == 5


def test_a_worker_whose_trial_another_worker_failed_goes_on(tmp_path):
    """A live worker's trial failed as stale by another worker (a late heartbeat): the worker logs it,
    leaves the trial to its queued retry and finishes the study instead of crashing."""
    storage = str(tmp_path / "trials.journal")
    other = open_storage(storage, heartbeat_interval=60, max_retry=3)  # "another worker" on the same file
    calls = []

    def evaluator(arch):
        calls.append(arch)
        if len(calls) == 2:  # while this worker evaluates its second trial, the other one fails it
            study = optuna.load_study(study_name="late", storage=other)
            (running,) = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
            other.set_trial_state_values(running._trial_id, optuna.trial.TrialState.FAIL)
            other.get_heartbeat_stale_trial_callback()(study, other.get_trial(running._trial_id))
        return fake_evaluator(arch)

    result = run_trials(
        tiny("nb201"), "random", evaluator, n_trials=4, seed=0, storage=storage, study_name="late",
        heartbeat_interval=60,
    )  # fmt: skip
    assert [t.state for t in result.trials[:2]] == ["COMPLETE", "FAIL"]
    (retry,) = [t for t in result.trials if t.retry_of == 1]
    assert retry.complete and retry.params == result.trials[1].params and len(result.complete) == 4


TINY = [
    *("--set", "space.init_channels=4", "--set", "space.layers=3", "--set", "data.subset=64"),
    *("--set", "data.batch_size=16", "--set", "data.eval_limit=32", "--set", "trials.epochs=1"),
]


@pytest.mark.slow
def test_cli_random_search_writes_a_run(tmp_path, cifar_source, session_cache, monkeypatch, capsys):
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)
    out = tmp_path / "run"
    args = ["search", "--space", "cell_v1", "--strategy", "random", "--trials", "3"]
    assert main([*args, "--data-dir", cifar_source, "--out", str(out), *TINY]) == 0
    assert "found architecture" in capsys.readouterr().out
    arch = load_architecture(out / "found.json")
    prov = arch.provenance
    assert (
        prov["strategy"] == "random" and prov["trials_complete"] == 3 and "most accurate" in prov["selection"]
    )
    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("number,state,accuracy,") and len(rows) == 4
    assert all(",COMPLETE," in r for r in rows[1:])
    accs = [float(r.split(",")[2]) for r in rows[1:]]
    assert prov["objectives"]["accuracy"] == max(accs)
    assert (out / "trials.journal").is_file() and not (out / "pareto.csv").exists()

    from pflnas.analysis.load import load_run

    run = load_run(out)
    assert run.complete, run.issues
    assert [m["trial"] for m in run.metrics] == [0, 1, 2] and run.metrics[-1]["val_acc"] == max(accs)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--strategy", "bogus"], "multi-trial: evolution, nsga2, random"),
        (
            ["--strategy", "evolution", "--set", "trials.objectives=[accuracy,latency]"],
            "use --strategy nsga2",
        ),
        (["--strategy", "nsga2", "--set", "trials.objectives=[latency]"], "trials.objectives must be"),
        (["--strategy", "random", "--trials", "0"], "trials.n_trials must be >= 1"),
        (["--strategy", "random", "--storage", "postgresql://u:secret@db/x"], "PGPASSWORD"),
    ],
)
def test_bad_multi_trial_settings_are_one_line_errors(tmp_path, capsys, extra, message):
    assert main(["search", "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_help_lists_both_kinds_of_strategy(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "one-shot: darts" in text and "multi-trial: evolution, nsga2, random" in text
    assert "--storage URL" in text and "--study NAME" in text and "--trials N" in text
