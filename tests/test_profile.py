"""Measured speed (``pflnas.measure.speed``) and ``pflnas profile`` with latency / throughput / memory:
statistics against known numbers, the timing protocol's side effects, the CPU peak-memory tracker against
hand-counted bytes, and the CLI's table, ratios, JSON and one-line errors. CPU only and tiny, except the
``gpu`` test."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from pflnas.arch.record import load_architecture
from pflnas.cli.main import main
from pflnas.errors import ConfigError
from pflnas.measure.context import MeasurementContext, SpeedConfig
from pflnas.measure.memory import LiveTensorBytes, measure_peak_memory
from pflnas.measure.speed import measure_latency, measure_speed, measure_throughput
from pflnas.measure.timing import TimingStats
from pflnas.models import resolve_network_config

REPO = Path(__file__).resolve().parents[1]
DARTS_V2 = REPO / "experiments/archs/darts_v2.json"
# a tiny DARTS network and fast timing: each CLI call below takes well under a second
TINY = ["--init-channels", "4", "--layers", "3", "--threads", "1"]
FAST = ["--warmup", "1", "--repeats", "2", "--batch-size", "2"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")


pytestmark = pytest.mark.usefixtures("one_thread")  # timings and big nets: no thread contention


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err):
    assert code == 2 and out == ""
    assert err.startswith("pflnas profile: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def context(batch_size: int = 4) -> MeasurementContext:
    return MeasurementContext("cpu", "test CPU", 1, "x", "float32", "contiguous", batch_size, 0, 5, "t")


# --- TimingStats ---------------------------------------------------------------------------------------
def test_timing_stats_known_numbers():
    s = TimingStats((4.0, 1.0, 10.0, 2.0, 3.0), context(batch_size=4))
    assert s.median == 3.0 and s.mean == 4.0 and s.min == 1.0 and s.max == 10.0
    assert s.std == pytest.approx(math.sqrt(12.5))  # sample std: sum of squared deviations 50 / (5 - 1)
    assert s.p10 == pytest.approx(1.4) and s.p90 == pytest.approx(7.6)  # linear interpolation
    assert s.iqr == pytest.approx(2.0)  # p75 4 - p25 2
    assert s.throughput == pytest.approx(4 / 0.003)  # batch / median seconds
    d = s.to_dict()
    assert d["median_ms"] == 3.0 and d["images_per_s"] == pytest.approx(1333.333, rel=1e-6)
    assert d["times_ms"] == [4.0, 1.0, 10.0, 2.0, 3.0] and "times_ms" not in s.to_dict(include_times=False)


def test_timing_stats_single_time_and_empty():
    s = TimingStats((2.5,), context(batch_size=1))
    assert s.std == 0.0 and s.iqr == 0.0 and s.median == s.p10 == s.p90 == 2.5
    with pytest.raises(ValueError):
        TimingStats((), context())


def test_context_contended():
    base = context()
    assert base.load_average is None and not base.contended
    assert replace(base, load_average=3.0, cpu_count=2).contended
    assert not replace(base, load_average=1.5, cpu_count=2).contended
    assert not replace(base, device="cuda", load_average=3.0, cpu_count=2).contended


# --- SpeedConfig ---------------------------------------------------------------------------------------
def test_speed_config_defaults_and_validation():
    cfg = SpeedConfig()
    assert (cfg.device, cfg.batch_size, cfg.warmup, cfg.repeats) == ("cpu", 64, 10, 30)
    assert not cfg.amp and not cfg.channels_last and cfg.threads == torch.get_num_threads()
    assert SpeedConfig(warmup=0).warmup == 0
    for bad in ({"repeats": 0}, {"batch_size": -1}, {"threads": 0}, {"warmup": -1}, {"device": "tpu"}):
        with pytest.raises(ConfigError):
            SpeedConfig(**bad)


@NO_CUDA
def test_speed_config_cuda_without_cuda():
    with pytest.raises(ConfigError, match="no CUDA device is available; use --device cpu"):
        SpeedConfig(device="cuda")


# --- measuring -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False])
def test_latency_and_throughput_fields_and_side_effects(training):
    net = mlp().train(training)
    threads = torch.get_num_threads()
    cfg = SpeedConfig(batch_size=3, warmup=1, repeats=4, threads=2)
    lat = measure_latency(net, (1, 16), cfg)
    thr = measure_throughput(net, (7, 16), cfg)  # the given batch dimension is replaced
    assert net.training is training and torch.get_num_threads() == threads
    assert len(lat.times_ms) == len(thr.times_ms) == 4 and all(t > 0 for t in lat.times_ms + thr.times_ms)
    assert lat.batch_size == 1 and thr.batch_size == 3
    assert lat.median > 0 and thr.throughput > 0 and lat.min <= lat.median <= lat.max
    ctx = thr.context
    assert (ctx.device, ctx.threads, ctx.dtype, ctx.memory_format) == ("cpu", 2, "float32", "contiguous")
    assert (ctx.batch_size, ctx.warmup, ctx.repeats, ctx.timer) == (3, 1, 4, "time.perf_counter_ns")
    assert ctx.device_name and ctx.torch_version == torch.__version__


def test_measure_speed_amp_and_channels_last_on_cpu():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)).train()
    cfg = SpeedConfig(batch_size=2, warmup=1, repeats=2, amp=True, channels_last=True, threads=1)
    report = measure_speed(net, (1, 3, 8, 8), cfg)
    assert net.training and net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert report.context.dtype == "bfloat16 autocast (float32 weights)"
    assert report.context.memory_format == "channels_last"
    assert report.memory.activation_bytes > 0
    assert set(report.to_dict()) == {"latency", "throughput", "memory"}


def test_cpu_peak_memory_counts_live_activation_bytes():
    net = mlp()
    mem = measure_peak_memory(net, (1, 16), SpeedConfig(batch_size=4, threads=1))
    # Sequential keeps the Linear output (4x32 fp32, 512 B) alive while ReLU writes its own 512 B;
    # afterwards only the ReLU output and the final 4x8 output (128 B) are alive
    assert mem.activation_bytes == 1024
    params = (16 * 32 + 32 + 32 * 8 + 8) * 4
    assert mem.baseline_bytes == params + 4 * 16 * 4  # weights, biases and the input
    assert mem.peak_bytes == mem.baseline_bytes + mem.activation_bytes
    assert "TorchDispatchMode" in mem.method and mem.context.batch_size == 4


def test_live_tensor_bytes_ignores_views_in_place_and_excluded():
    x = torch.zeros(100)  # 400 B
    with LiveTensorBytes(exclude=[x]) as tracker:
        v = x.view(10, 10)  # a view: no new storage
        x.add_(1)  # in place
        y = x * 2  # 400 B new
        z = y.relu_().t()  # in place + view of a counted storage
        w = torch.empty(50)  # 200 B new
        assert tracker.live == 600
        del y, z  # the last references to y's storage
        assert tracker.live == 200
    assert tracker.peak == 600 and v.shape == (10, 10) and w.numel() == 50


def test_live_tensor_bytes_frees():
    with LiveTensorBytes() as tracker:
        a = torch.ones(256)  # 1 KiB
        b = a + 1  # 1 KiB
        del a
        c = b + 1  # 1 KiB
        live = tracker.live
    assert live == 2048 and tracker.peak == 2048 and c.numel() == 256


# --- factory: image_size -------------------------------------------------------------------------------
def test_resolve_network_config_image_size():
    arch = load_architecture(DARTS_V2)
    assert resolve_network_config(arch).image_size == 32
    assert resolve_network_config(arch, image_size=64).input_shape(2) == (2, 3, 64, 64)
    with pytest.raises(ConfigError, match="image_size"):
        resolve_network_config(arch, image_size=0)


# --- CLI -----------------------------------------------------------------------------------------------
def test_cli_single_file_text(capsys):
    code, out, err = run_cli(capsys, "profile", "--arch", DARTS_V2, *TINY, *FAST)
    assert code == 0 and (err == "" or err.startswith("warning: system load"))  # a busy machine is flagged
    lines = out.splitlines()
    assert lines[0].startswith("arch      ") and lines[3].startswith("params    ")
    assert (
        lines[5].startswith("context   cpu (")
        and "1 threads" in lines[5]
        and "warmup 1, repeats 2" in lines[5]
    )
    assert lines[6].startswith("latency   ") and " ms ± IQR " in lines[6]
    assert lines[7].startswith("speed     ") and "images/s at batch 2" in lines[7]
    assert lines[8].startswith("memory    ") and "peak activation memory at batch 2" in lines[8]
    assert "measured by peak of live tensor bytes" in lines[8]


def test_cli_single_file_json_keeps_the_flat_keys(capsys):
    code, out, _ = run_cli(capsys, "profile", "--arch", DARTS_V2, *TINY, *FAST, "--json")
    report = json.loads(out)
    assert code == 0
    assert report["params"] > 0 and report["macs"] > 0 and report["input_shape"] == [1, 3, 32, 32]
    assert report["network"]["init_channels"] == 4 and report["space"] == "darts"
    assert report["latency"]["batch_size"] == 1 and report["latency"]["median_ms"] > 0
    assert len(report["latency"]["times_ms"]) == 2
    assert report["throughput"]["batch_size"] == 2 and report["throughput"]["images_per_s"] > 0
    assert report["memory"]["activation_bytes"] > 0 and report["memory"]["batch_size"] == 2
    ctx = report["context"]
    assert ctx["device"] == "cpu" and ctx["threads"] == 1 and ctx["dtype"] == "float32"
    assert (ctx["batch_size"], ctx["latency_batch_size"], ctx["warmup"], ctx["repeats"]) == (2, 1, 1, 2)
    assert "ratios" not in report


def test_cli_no_speed(capsys):
    code, out, _ = run_cli(capsys, "profile", "--arch", DARTS_V2, *TINY, "--no-speed", "--json")
    report = json.loads(out)
    assert code == 0 and report["params"] > 0 and report["macs"] > 0
    assert report["context"] is None and "latency" not in report
    code, out, _ = run_cli(capsys, "profile", "--arch", DARTS_V2, *TINY, "--no-speed")
    assert code == 0 and out.count("\n") == 5  # the original five lines


def test_cli_several_files_table_and_ratios(tmp_path, capsys):
    other = tmp_path / "b.json"
    other.write_text(DARTS_V2.read_text())
    argv = ["profile", "--arch", DARTS_V2, other, *TINY, *FAST]
    code, out, _ = run_cli(capsys, *argv, "--json")
    data = json.loads(out)
    assert code == 0 and set(data) == {"context", "results"} and len(data["results"]) == 2
    first, second = data["results"]
    assert first["ratios"] == {
        k: 1.0 for k in ("params", "macs", "latency", "throughput", "activation_memory")
    }
    assert second["arch"] == str(other) and second["ratios"]["params"] == 1.0
    assert second["ratios"]["latency"] == second["latency"]["median_ms"] / first["latency"]["median_ms"]
    assert data["context"]["batch_size"] == 2 and "context" not in first

    code, out, _ = run_cli(capsys, *argv)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("context: cpu (") and "input 3x32x32" in lines[0]
    assert lines[1].split()[:3] == ["arch", "network", "params"] and "images/s" in lines[1]
    assert lines[2].startswith(str(DARTS_V2)) and lines[3].startswith(str(other))
    assert lines[2].count("1.00x") == 5
    assert len({len(line) for line in lines[1:3]}) == 1  # one aligned table
    assert lines[-1].startswith("peak act. mem: peak activation memory at batch 2, measured by")


def test_cli_several_files_no_speed(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "profile", "--arch", DARTS_V2, DARTS_V2, *TINY, "--no-speed", "--json")
    data = json.loads(out)
    assert code == 0 and data["context"] is None
    assert data["results"][1]["ratios"] == {"params": 1.0, "macs": 1.0}


def test_cli_image_size(capsys):
    reports = [
        json.loads(run_cli(capsys, "profile", "--arch", DARTS_V2, *TINY, "--no-speed", "--json", *size)[1])
        for size in ([], ["--image-size", "64"])
    ]
    assert reports[1]["input_shape"] == [1, 3, 64, 64] and reports[1]["network"]["image_size"] == 64
    assert reports[1]["params"] == reports[0]["params"]
    assert 3.9 < reports[1]["macs"] / reports[0]["macs"] < 4.1  # conv MACs scale with the pixel count


@NO_CUDA
def test_cli_cuda_without_cuda(capsys):
    code, out, err = run_cli(capsys, "profile", "--arch", DARTS_V2, "--device", "cuda")
    assert_one_line_error(code, out, err)
    assert "--device cuda: no CUDA device is available; use --device cpu" in err


@pytest.mark.parametrize(
    "flags",
    [
        ["--repeats", "0"],
        ["--batch-size", "0"],
        ["--threads", "-1"],
        ["--warmup", "-1"],
        ["--image-size", "0"],
        ["--dataset", "imagenet", "--image-size", "448", "--init-channels", "4"],  # AvgPool2d(7) head
    ],
)
def test_cli_bad_flags(capsys, flags):
    code, out, err = run_cli(capsys, "profile", "--arch", DARTS_V2, *flags)
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err


def test_cli_non_integer_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["profile", "--arch", str(DARTS_V2), "--repeats", "two"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "--repeats" in err


def test_cli_bad_second_file_fails_before_timing(tmp_path, capsys):
    missing = tmp_path / "missing.json"
    code, out, err = run_cli(capsys, "profile", "--arch", DARTS_V2, missing)  # no tiny flags: would be slow
    assert_one_line_error(code, out, err)


# --- CUDA ----------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", [False, True])
def test_cuda_timing_and_memory(amp, capsys):
    net = mlp().train()
    cfg = SpeedConfig(device="cuda", batch_size=8, warmup=2, repeats=5, amp=amp)
    report = measure_speed(net, (1, 16), cfg)
    assert next(net.parameters()).is_cuda and net.training
    assert report.context.timer == "torch.cuda.Event" and report.context.device_name
    assert len(report.latency.times_ms) == 5 and all(t > 0 for t in report.latency.times_ms)
    assert report.throughput.throughput > 0
    mem = report.memory
    assert (
        0 < mem.activation_bytes <= mem.peak_bytes
        and mem.peak_bytes == mem.baseline_bytes + mem.activation_bytes
    )
    code, out, _ = run_cli(capsys, "profile", "--arch", DARTS_V2, "--device", "cuda", *TINY, *FAST, "--json")
    report = json.loads(out)
    assert code == 0 and report["context"]["device"] == "cuda" and report["latency"]["median_ms"] > 0
