"""Distributed search under torchrun (CPU, gloo, 2 processes): ranks stay bitwise in step, agree on
found.json, match one process with the same global batch, and resume; plus the loop's sync primitives.

Every run is a real ``python -m torch.distributed.run`` subprocess on a tiny cell_v1 supernet (C=4, 3 cells)
and a 64-image subset (32 for weights, 32 for alphas: 2 steps of global batch 16 per epoch).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pflnas.cli.main import main
from pflnas.config.loader import build_config
from pflnas.config.search import SearchConfig
from pflnas.errors import ConfigError
from pflnas.train.dist_search import DEBUG_ALPHA_ENV, SearchSync, SyncError, check_global_batch
from pflnas.train.distributed import DistInfo, init_distributed, shutdown
from pflnas.train.loaders import make_loaders
from pflnas.train.search import SearchRun

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

EPOCHS = 3
SETS = [
    "space.init_channels=4",
    "space.layers=3",
    "data.subset=64",
    "data.batch_size=16",  # the global batch: 8 per process with 2 processes
    "data.eval_limit=32",
    "run.progress=false",
    "run.threads=1",
    "run.device=cpu",
]
CPU = torch.device("cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _search_args(cifar_source: str, out: Path, *extra: str, strategy: str = "darts") -> list[str]:
    args = ["search", "--space", "cell_v1", "--strategy", strategy, "--data-dir", cifar_source]
    args += ["--out", str(out), "--epochs", str(EPOCHS)]
    for item in (*SETS, *extra):
        args += ["--set", item]
    return args


def _torchrun_cmd(args: list[str]) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    return [*launcher, f"--master_port={_free_port()}", "-m", "pflnas", *args]


def _env(session_cache: str, alpha_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PFLNAS_CACHE": session_cache,
        DEBUG_ALPHA_ENV: str(alpha_dir),
        "OMP_NUM_THREADS": "1",
    }


def _torchrun(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    res = subprocess.run(_torchrun_cmd(args), env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return res


def _alphas(path: Path) -> dict[tuple[int, int], np.ndarray]:
    """(epoch, step) -> alphas after that step (step -1: before the first step); a later line wins."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {(r["epoch"], r["step"]): np.array(r["alpha"]) for r in rows}


def _assert_ranks_in_step(alpha_dir: Path, run_dir: Path, steps: int) -> None:
    a = _alphas(alpha_dir / "alpha.rank0.jsonl")
    b = _alphas(alpha_dir / "alpha.rank1.jsonl")
    assert len([k for k in a if k[1] >= 0]) == steps
    assert a.keys() == b.keys()
    for key in a:  # bitwise: the dump round-trips every float exactly
        assert np.array_equal(a[key], b[key]), f"ranks differ after epoch {key[0]} step {key[1]}"
    assert not np.array_equal(a[(0, -1)], a[max(a)])  # the alphas did move
    found = [(alpha_dir / f"found.rank{r}.json").read_text() for r in (0, 1)]
    assert found[0] == found[1]
    assert json.loads(found[0]) == json.loads((run_dir / "found.json").read_text())


@pytest.fixture(autouse=True)
def _cache(monkeypatch, session_cache):
    monkeypatch.setenv("PFLNAS_CACHE", session_cache)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, cifar_source, session_cache):
    """One uninterrupted 2-process DARTS search, checked at every step (run.verify_sync)."""
    root = tmp_path_factory.mktemp("ddp")
    out, alpha_dir = root / "run", root / "alphas"
    args = _search_args(cifar_source, out, "run.verify_sync=true")
    res = _torchrun(args, _env(session_cache, alpha_dir))
    return out, alpha_dir, res


def test_two_ranks_stay_bitwise_in_step_and_agree_on_found_json(two_ranks):
    out, alpha_dir, res = two_ranks
    _assert_ranks_in_step(alpha_dir, out, steps=EPOCHS * 2)
    found = json.loads((out / "found.json").read_text())
    assert found["provenance"]["world_size"] == 2
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == EPOCHS  # rank 0 writes, once per epoch
    assert res.stdout.count("found architecture") == 1 and res.stdout.count("epoch 1/") == 1


def test_two_ranks_match_one_process_with_the_same_global_batch(
    two_ranks, tmp_path, monkeypatch, cifar_source
):
    """Stated tolerance. With BatchNorm in eval mode the averaged gradient of 2 x 8 images equals the
    gradient of the 16-image batch to 1e-7 (float rounding); in training mode BN normalises with per-process
    batch statistics (as DDP does), which changes the first alpha gradient by ~50% (cosine ~0.88) on this
    4-channel supernet, and Adam's normalised steps (+-lr where a gradient is near zero) amplify that. So the
    alpha displacements after 3 epochs need only point the same way (cosine >= 0.6; measured ~0.85) and the
    weights may differ by at most 3/4 of their own update (measured ~0.4). Same steps, same schedule."""
    two_out, two_alphas, _ = two_ranks
    one_out, one_alphas = tmp_path / "one", tmp_path / "alphas"
    monkeypatch.setenv(DEBUG_ALPHA_ENV, str(one_alphas))
    assert main(_search_args(cifar_source, one_out)) == 0
    one = _alphas(one_alphas / "alpha.rank0.jsonl")
    two = _alphas(two_alphas / "alpha.rank0.jsonl")
    assert one.keys() == two.keys()  # the same number of steps: the global batch is the same
    start, end = (0, -1), max(one)
    assert np.array_equal(one[start], two[start])  # the same initial alphas
    d1, d2 = one[end] - one[start], two[end] - two[start]
    cosine = float(d1 @ d2 / np.linalg.norm(d1) / np.linalg.norm(d2))
    assert cosine >= 0.6, cosine

    cfg = build_config(SearchConfig, [], [*SETS, f"data.data_dir={cifar_source}", f"run.epochs={EPOCHS}"])
    run = SearchRun(cfg, tmp_path / "unused")
    run.setup()  # seeds and builds the supernet as a run does: the initial weights
    init = {k: v.clone() for k, v in run.model.state_dict().items()}
    a = torch.load(one_out / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(two_out / "checkpoint.pt", weights_only=True)["model"]
    keys = [k for k in a if a[k].is_floating_point() and "running" not in k and not k.startswith("arch.")]
    norm = lambda d: sum(float((v.double() ** 2).sum()) for v in d.values()) ** 0.5  # noqa: E731
    update = norm({k: a[k] - init[k] for k in keys})
    gap = norm({k: b[k] - a[k] for k in keys})
    assert update > 0 and gap < 0.75 * update, (gap, update)


def _process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/*/stat): killing torchrun's process group alone leaves
    its workers running, and writing into the run directory, beside the resumed run."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree = [pid]
    for p in tree:
        tree += [child for child, ppid in parent.items() if ppid == p]
    return tree


def test_a_killed_distributed_search_resumes_to_the_same_result(
    two_ranks, tmp_path, cifar_source, session_cache
):
    full, full_alphas, _ = two_ranks
    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        _torchrun_cmd(_search_args(cifar_source, cut)),
        env=_env(session_cache, tmp_path / "alphas-cut"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group (the workers get sessions of their own)
    )
    metrics = cut / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert proc.poll() is None, f"search exited early: {proc.stderr.read() if proc.stderr else ''}"
        assert time.time() < deadline, "timed out waiting for the first epoch"
        time.sleep(0.05)
    for pid in _process_tree(proc.pid):  # torchrun starts each worker in a session of its own
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not (cut / "found.json").exists()

    resumed_alphas = tmp_path / "alphas-resumed"
    _torchrun(["search", "--resume", str(cut)], _env(session_cache, resumed_alphas))
    assert (
        json.loads((cut / "found.json").read_text())["cells"]
        == json.loads((full / "found.json").read_text())["cells"]
    )
    a, b = json.loads((full / "found.json").read_text()), json.loads((cut / "found.json").read_text())
    assert a["probabilities"] == b["probabilities"]
    final_full = _alphas(full_alphas / "alpha.rank1.jsonl")
    final_cut = _alphas(resumed_alphas / "alpha.rank1.jsonl")
    assert np.array_equal(final_full[max(final_full)], final_cut[max(final_cut)])  # bitwise, rank 1 too
    strip = lambda rows: [{k: v for k, v in json.loads(r).items() if k != "epoch_time"} for r in rows]  # noqa: E731
    rows_full = (full / "metrics.jsonl").read_text().splitlines()
    rows_cut = (cut / "metrics.jsonl").read_text().splitlines()
    assert strip(rows_full) == strip(rows_cut)


def test_gdas_under_two_ranks_stays_in_step(tmp_path, cifar_source, session_cache):
    """GDAS: a hard sampled path per forward (weights off the path get no gradient); the ranks draw the
    same path from the same seed, as one process with the global batch draws one path per step."""
    out, alpha_dir = tmp_path / "run", tmp_path / "alphas"
    _torchrun(
        _search_args(cifar_source, out, "run.verify_sync=true", "run.epochs=1", strategy="gdas"),
        _env(session_cache, alpha_dir),
    )
    _assert_ranks_in_step(alpha_dir, out, steps=2)


def test_loaders_split_each_global_batch_over_ranks(cifar_source):
    cfg = build_config(SearchConfig, [], [*SETS, f"data.data_dir={cifar_source}"])
    one = make_loaders(cfg, CPU)
    ranks = [make_loaders(cfg, CPU, DistInfo(r, 2, 0, CPU)) for r in (0, 1)]
    for name in ("train", "arch"):
        single = list(getattr(one, name))
        shards = [list(getattr(r, name)) for r in ranks]
        assert len(single) == len(shards[0]) == len(shards[1]) == 2
        for k, (x, y) in enumerate(single):  # rank r takes every 2nd image of the global batch from r
            for r in (0, 1):
                assert torch.equal(shards[r][k][0], x[r::2]) and torch.equal(shards[r][k][1], y[r::2])
    evaluated = [torch.cat([y for _, y in r.evaluate]) for r in ranks]
    assert sum(len(y) for y in evaluated) == 32 == sum(len(y) for _, y in one.evaluate)


def test_global_batch_must_split_evenly():
    assert check_global_batch(16, DistInfo(0, 2, 0, CPU)) == 8
    with pytest.raises(ConfigError, match="data.batch_size 10 is not divisible by the 4 processes"):
        check_global_batch(10, DistInfo(0, 4, 0, CPU))


def _sync_worker(rank: int, port: int, out_dir: str) -> None:
    """One of two forked processes (the test process's imports are inherited: no launch cost)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    sync, out = SearchSync(info), {}
    a, b, c = (torch.nn.Parameter(torch.zeros(s)) for s in ((3,), (2, 2), (1,)))
    a.grad = torch.full((3,), float(rank + 1))
    b.grad = torch.full((2, 2), 4.0) if rank == 0 else None  # rank 1 took no path through b
    sync.reduce_grads([a, b, c])
    out["grads"] = [a.grad.tolist(), b.grad.tolist(), c.grad is None]
    out["average"] = [t.tolist() for t in sync.average([torch.tensor([2.0 * rank]), torch.ones(2)])]
    sync.verify({"architecture weights": [torch.tensor([1.0, 2.0])]}, "after epoch 1 step 1")  # equal
    parts = {"architecture weights": [torch.tensor([1.0, 2.0 + rank])], "weights": [torch.ones(3)]}
    for key, check in (
        ("verify", lambda: sync.verify(parts, "after epoch 2 step 7")),
        ("nan", lambda: sync.verify({"weights": [torch.tensor([float("nan")])]}, "after epoch 3 step 1")),
        ("agree", lambda: sync.agree("same" if rank == 0 else "other", "the found architecture")),
    ):
        try:
            check()
        except SyncError as exc:
            out[key] = str(exc)

    def refuse() -> None:
        raise ConfigError("--out x is not empty")

    try:
        sync.from_main(refuse)
    except ConfigError as exc:
        out["from_main"] = str(exc)
    bn = torch.nn.BatchNorm2d(2)
    bn.running_mean.fill_(float(rank))
    sync.average_bn_statistics(bn)
    out["bn"] = bn.running_mean.tolist()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
    shutdown(info)


def test_sync_primitives_under_two_processes(tmp_path):
    torch.multiprocessing.start_processes(
        _sync_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="fork"
    )
    outs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert outs[0] == outs[1]  # every rank gets the same results and the same errors
    out = outs[0]
    # a gradient None on one rank counts as zeros; None on every rank stays None
    assert out["grads"] == [[1.5, 1.5, 1.5], [[2.0, 2.0], [2.0, 2.0]], True]
    assert out["average"] == [[1.0], [1.0, 1.0]]
    assert "after epoch 2 step 7" in out["verify"] and "architecture weights: 1 of 2 values" in out["verify"]
    assert "weights: " not in out["verify"].split("architecture weights")[1]  # equal weights not named
    assert "non-finite" in out["nan"] and "after epoch 3 step 1" in out["nan"]
    assert "rank(s) 1 differ from rank 0" in out["agree"]
    assert out["from_main"] == "--out x is not empty"
    assert out["bn"] == [0.5, 0.5]
