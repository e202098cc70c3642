"""CUDA checks (marker ``gpu``): skipped where no GPU is visible; run on a GPU machine with ``-m gpu``."""

import json

import pytest
import torch

from pflnas.spaces import load_space
from pflnas.supernet import build_supernet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("amp", [False, True])
def test_supernet_on_cuda_channels_last(amp):
    space = load_space("cell_v1").replace(init_channels=8, layers=5)
    net = build_supernet(space, 10).cuda().to(memory_format=torch.channels_last)
    assert all(p.is_cuda for p in net.arch_parameters())
    x = torch.randn(8, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        y = net(x)
    y.float().sum().backward()
    assert torch.isfinite(y.float()).all()
    assert all(p.grad is not None for p in net.arch_parameters())


def test_cli_search_on_cuda(tmp_path, cifar_source, session_cache, monkeypatch):
    from pflnas.cli.main import main

    monkeypatch.setenv("PFLNAS_CACHE", session_cache)
    out = tmp_path / "run"
    rc = main(["search", "--space", "cell_v1", "--device", "cuda", "--amp", "--channels-last",
               "--data-dir", cifar_source, "--out", str(out), "--epochs", "1",
               "--set", "data.subset=512", "--set", "run.progress=false"])  # fmt: skip
    assert rc == 0
    found = json.loads((out / "found.json").read_text())
    assert found["provenance"]["device"] != "cpu"
