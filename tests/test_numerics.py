"""Numerical safety: NaN/Inf in a loss, a weight gradient, an architecture gradient or an alpha stops a search
or a retrain in the step it appears, naming the epoch, the step and the tensor, with the last good checkpoint
left as it was (exit code 2 through the CLI); ``run.nonfinite=skip`` drops such batches, counts them in
metrics.jsonl and stops past ``run.nonfinite_max_skips``.

NaNs are injected with autograd and forward hooks installed right after the run's setup; which step is
running is read from the guard's own ``at`` calls.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from _tiny_runs import ARCH, RETRAIN_SETS, SEARCH_SETS, search_argv, tiny_archive

from pflnas.arch import load_architecture
from pflnas.cli.main import main
from pflnas.config.loader import build_config
from pflnas.config.search import SearchConfig
from pflnas.config.validate import validate_search_config
from pflnas.errors import ConfigError
from pflnas.train.distributed import DistInfo
from pflnas.train.guard import FiniteGuard, NonFiniteError
from pflnas.train.recipe import RetrainConfig, recipe_layer, validate_retrain_config
from pflnas.train.retrain import RetrainRun
from pflnas.train.search import SearchRun

pytestmark = pytest.mark.usefixtures("one_thread")
NAN = float("nan")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    return tiny_archive(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(autouse=True)
def _cache(monkeypatch, session_cache):
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)


class Clock:
    """The (epoch, step) the loop is at, and per-step counters, read from FiniteGuard.at."""

    def __init__(self, monkeypatch):
        self.now = (-1, -1)
        self.count: dict[str, int] = {}
        original = FiniteGuard.at

        def at(guard, epoch, step):
            self.now, self.count = (epoch, step), {}
            original(guard, epoch, step)

        monkeypatch.setattr(FiniteGuard, "at", at)

    def tick(self, event: str) -> int:
        """How many times ``event`` happened in this step before (0 the first time)."""
        n = self.count.get(event, 0)
        self.count[event] = n + 1
        return n


def after_setup(monkeypatch, cls, method: str, install) -> None:
    """Call ``install(run)`` right after ``cls.method`` (the run's setup) on every run."""
    original = getattr(cls, method)

    def setup(self, *args, **kwargs):  # setup may take the start-up progress printer
        original(self, *args, **kwargs)
        install(self)

    monkeypatch.setattr(cls, method, setup)


def search_cfg(source: str, *sets: str, epochs: int = 2) -> SearchConfig:
    cfg = build_config(
        SearchConfig, [], [*SEARCH_SETS, f"run.epochs={epochs}", f"data.data_dir={source}", *sets]
    )
    validate_search_config(cfg)
    return cfg


def nan_grad_of(
    param: torch.Tensor, clock: Clock, at: set[tuple[int, int]], first_only: bool = False
) -> None:
    """Make ``param``'s gradient NaN at the steps ``at`` (``first_only``: its first gradient in the step,
    i.e. the architecture step's for an alpha)."""

    def hook(grad):
        if clock.now in at and (clock.tick(f"grad{id(param)}") == 0 or not first_only):
            return grad * NAN
        return None

    param.register_hook(hook)


def nan_training_loss(model: torch.nn.Module, clock: Clock, at: set[tuple[int, int]]) -> None:
    """NaN logits in the weight step of the steps ``at`` (the second supernet forward of a search step)."""

    def hook(module, inputs, output):
        if module.training and clock.now in at and clock.tick("forward") == 1:
            return output * NAN
        return None

    model.register_forward_hook(hook)


# --- search ----------------------------------------------------------------------------------------------
def test_nan_training_loss_stops_the_cli_with_one_line_and_keeps_the_checkpoint(
    tmp_path, source, monkeypatch, capsys
):
    clock = Clock(monkeypatch)
    saved = {}

    def install(run):
        nan_training_loss(run.model, clock, {(1, 1)})

        def snapshot(module, inputs):  # the checkpoint as it was when the bad step began
            if clock.now == (1, 1) and "bytes" not in saved:
                saved["bytes"] = (run.run_dir / "checkpoint.pt").read_bytes()

        run.model.register_forward_pre_hook(snapshot)

    after_setup(monkeypatch, SearchRun, "setup", install)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(search_argv(source, out, 2)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "NaN/Inf in the training loss at epoch 2 step 2" in err[0]
    assert f"{out / 'checkpoint.pt'} is left as it was" in err[0] and "run.nonfinite=skip" in err[0]
    assert (out / "checkpoint.pt").read_bytes() == saved["bytes"]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (out / "found.json").exists()


def test_nan_weight_gradient_is_named(tmp_path, source, monkeypatch):
    clock = Clock(monkeypatch)
    picked = {}

    def install(run):
        name, param = run._named_weights[5]
        picked["name"] = name
        nan_grad_of(param, clock, {(0, 2)})

    after_setup(monkeypatch, SearchRun, "setup", install)
    with pytest.raises(NonFiniteError) as err:
        SearchRun(search_cfg(source), tmp_path / "run").run()
    assert f"NaN/Inf in grad of {picked['name']} at epoch 1 step 3" in str(err.value)
    assert "no checkpoint was written yet" in str(err.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_nan_alpha_gradient_is_named(tmp_path, source, monkeypatch):
    clock = Clock(monkeypatch)
    picked = {}

    def install(run):
        label, alpha = run._named_alphas[3]
        picked["label"] = label
        nan_grad_of(alpha, clock, {(0, 1)}, first_only=True)

    after_setup(monkeypatch, SearchRun, "setup", install)
    with pytest.raises(NonFiniteError) as err:
        SearchRun(search_cfg(source), tmp_path / "run").run()
    assert f"NaN/Inf in grad of alpha {picked['label']} at epoch 1 step 2" in str(err.value)


def test_an_alpha_turned_inf_stops_even_in_skip_mode(tmp_path, source, monkeypatch):
    clock = Clock(monkeypatch)
    picked = {}

    def install(run):
        label, alpha = run._named_alphas[0]
        picked["label"] = label
        _, weight = run._named_weights[0]

        def corrupt(grad):  # during the weight step's backward: after the gradients, before the next check
            if clock.now == (0, 2):
                with torch.no_grad():
                    alpha[0] = float("inf")

        weight.register_hook(corrupt)

    after_setup(monkeypatch, SearchRun, "setup", install)
    with pytest.raises(NonFiniteError) as err:
        SearchRun(search_cfg(source, "run.nonfinite=skip"), tmp_path / "run").run()
    assert f"NaN/Inf in alpha {picked['label']} at epoch 1 step 3" in str(err.value)


def test_skip_mode_drops_bad_batches_counts_them_and_leaves_the_state(tmp_path, source, monkeypatch):
    clock = Clock(monkeypatch)
    seen = {}

    def install(run):
        nan_grad_of(
            run._named_weights[2][1], clock, {(0, 1)}
        )  # a weight gradient: the weight step is dropped
        nan_grad_of(run._named_alphas[1][1], clock, {(1, 3)}, first_only=True)  # an alpha's: the whole step

        def snapshot(module, inputs):  # at the start of a step (its first forward)
            if clock.now in ((0, 1), (0, 2), (1, 3)) and clock.tick("pre") == 0:
                weights = [p.detach().clone() for p in run.weights]
                momenta = [run.optimizer.state[p]["momentum_buffer"].clone() for p in run.weights]
                alphas = {n: p.detach().clone() for n, p in run._named_alphas}
                seen[clock.now] = (weights, momenta, alphas)

        run.model.register_forward_pre_hook(snapshot)

    after_setup(monkeypatch, SearchRun, "setup", install)
    out = tmp_path / "run"
    SearchRun(search_cfg(source, "run.nonfinite=skip"), out).run()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_batches"] for r in rows] == [1, 1]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["arch_loss"]) for r in rows)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["nonfinite_skipped"] == 2
    probs = json.loads((out / "found.json").read_text())["probabilities"]
    assert all(math.isfinite(p) for dist in probs.values() for p in dist.values())
    # step (0, 1): its weight step was dropped, so no weight and no momentum moved
    (w1, m1, _), (w2, m2, _) = seen[(0, 1)], seen[(0, 2)]
    assert all(torch.equal(a, b) for a, b in zip(w1 + m1, w2 + m2))
    # step (1, 3), the last: dropped in its architecture step, so the alphas are as it found them
    alphas = seen[(1, 3)][2]
    assert all(torch.equal(state["model"][f"arch.{n}"], a) for n, a in alphas.items())


def test_skip_mode_stops_past_its_cap(tmp_path, source, monkeypatch):
    clock = Clock(monkeypatch)
    after_setup(
        monkeypatch,
        SearchRun,
        "setup",
        lambda run: nan_training_loss(run.model, clock, {(0, 0), (0, 2)}),
    )
    with pytest.raises(NonFiniteError) as err:
        SearchRun(search_cfg(source, "run.nonfinite=skip", "run.nonfinite_max_skips=1"), tmp_path / "r").run()
    message = str(err.value)
    assert "2 batches had NaN/Inf, more than run.nonfinite_max_skips=1" in message
    assert "the training loss at epoch 1 step 3" in message


def test_deferred_checks_never_let_a_checkpoint_through(tmp_path, source, monkeypatch):
    """The GPU path (verdicts kept on the device, read every few steps) on the CPU: a NaN in the last step
    of epoch 1 is read before the epoch's checkpoint, and named by its step."""
    clock = Clock(monkeypatch)

    def install(run):
        run.guard.every = 3  # 4 steps per epoch: the NaN at step 4 is not due before the epoch ends
        nan_training_loss(run.model, clock, {(0, 3)})

    after_setup(monkeypatch, SearchRun, "setup", install)
    with pytest.raises(NonFiniteError) as err:
        SearchRun(search_cfg(source), tmp_path / "run").run()
    assert "NaN/Inf in the training loss at epoch 1 step 4" in str(err.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == ""


# --- the guard alone -------------------------------------------------------------------------------------
def _guard(mode: str = "stop", every: int | None = None, reduce=None, max_skips: int = 2) -> FiniteGuard:
    return FiniteGuard(
        mode, max_skips, torch.device("cpu"), kept=lambda: "ckpt kept", reduce=reduce, every=every
    )


def test_guard_reads_deferred_verdicts_when_due_and_names_the_first_bad_step():
    guard = _guard(every=3)
    values = [1.0, NAN, float("inf")]
    for step, v in enumerate(values):
        guard.at(0, step)
        guard.watch("the loss", torch.tensor(v))
        assert guard.ok()  # deferred: nothing is read before it is due
        if step < 2:
            guard.step_done()
    with pytest.raises(NonFiniteError, match=r"the loss at epoch 1 step 2 \(read at epoch 1 step 3\)"):
        guard.step_done()


def test_guard_flush_reads_pending_verdicts():
    guard = _guard(every=50)
    guard.at(2, 7)
    guard.watch("the weight gradients", torch.tensor([1.0, -float("inf")]))
    with pytest.raises(NonFiniteError, match="the weight gradients at epoch 3 step 8; ckpt kept"):
        guard.flush()
    guard.flush()  # read once: nothing pending any more


def test_guard_skip_mode_counts_and_names_the_tensor():
    guard = _guard("skip", max_skips=1)
    named = [("grad of a", torch.ones(2)), ("grad of b", torch.tensor([0.0, NAN]))]
    guard.watch("the gradients", torch.tensor(NAN), named)
    assert guard.ok() is False and guard.skipped == 1
    guard.watch("the gradients", torch.tensor(1.0), named[:1])
    assert guard.ok() is True
    guard.watch("the gradients", torch.tensor(NAN), named)
    with pytest.raises(
        NonFiniteError, match=r"2 batches had NaN/Inf.*the last in grad of b at epoch 1 step 1"
    ):
        guard.ok()


def test_guard_follows_the_other_ranks():
    """torchrun: a NaN on another rank (the reduce sums the 'bad' flags) stops this rank too."""
    guard = _guard(reduce=lambda bad: bad + torch.tensor([0, 1], dtype=bad.dtype))
    guard.watch("the training loss", torch.tensor(1.0))
    guard.watch("the weight gradients", torch.tensor(2.0), [("grad of w", torch.ones(1))])
    with pytest.raises(NonFiniteError, match="NaN/Inf in the weight gradients at epoch 1 step 1"):
        guard.ok()


@pytest.mark.parametrize(
    "item, message",
    [
        ("run.nonfinite=ignore", "run.nonfinite must be stop or skip"),
        ("run.nonfinite_max_skips=-1", "run.nonfinite_max_skips must be >= 0"),
    ],
)
def test_nonfinite_options_are_validated(item, message):
    with pytest.raises(ConfigError, match=message):
        validate_search_config(build_config(SearchConfig, [], [item]))
    with pytest.raises(ConfigError, match=message):
        validate_retrain_config(build_config(RetrainConfig, [recipe_layer("quick")], [item]))


# --- retrain ---------------------------------------------------------------------------------------------
def retrain_run(source: str, out: Path, *sets: str, epochs: int = 2) -> RetrainRun:
    items = [*RETRAIN_SETS, f"schedule.epochs={epochs}", f"data.data_dir={source}", *sets]
    cfg = build_config(RetrainConfig, [recipe_layer("quick")], items)
    validate_retrain_config(cfg)
    return RetrainRun(cfg, load_architecture(ARCH), out, DistInfo(0, 1, 0, torch.device("cpu")))


def test_retrain_nan_loss_stops_and_keeps_the_last_checkpoint(tmp_path, source, monkeypatch):
    clock = Clock(monkeypatch)
    saved = {}

    def install(run):
        model = run.model_without_ddp

        def hook(module, inputs, output):
            if module.training and clock.now == (1, 4):
                saved["bytes"] = (run.run_dir / "last.pt").read_bytes()
                return type(output)(*(o * NAN for o in output)) if isinstance(output, tuple) else output * NAN
            return None

        model.register_forward_hook(hook)

    after_setup(monkeypatch, RetrainRun, "setup", install)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError) as err:
        retrain_run(source, out).run()
    assert "NaN/Inf in the training loss at epoch 2 step 5" in str(err.value)
    assert f"{out / 'last.pt'} is left as it was" in str(err.value)
    assert (out / "last.pt").read_bytes() == saved["bytes"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_retrain_nan_gradient_is_named_and_skip_mode_counts(tmp_path, source, monkeypatch):
    clock = Clock(monkeypatch)
    picked = {}

    def install(run):
        name, param = run._named[4]
        picked["name"] = name
        nan_grad_of(param, clock, {(0, 2), (1, 0)})

    after_setup(monkeypatch, RetrainRun, "setup", install)
    with pytest.raises(NonFiniteError) as err:
        retrain_run(source, tmp_path / "stop").run()
    assert f"NaN/Inf in grad of {picked['name']} at epoch 1 step 3" in str(err.value)
    out = tmp_path / "skip"
    result = retrain_run(source, out, "run.nonfinite=skip").run()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_batches"] for r in rows] == [1, 1]
    assert result["epochs"] == 2 and math.isfinite(rows[-1]["train_loss"])
    assert torch.load(out / "last.pt", weights_only=True)["nonfinite_skipped"] == 2
