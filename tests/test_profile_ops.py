"""``pflnas.measure.opbench`` and ``pflnas profile --ops``: every (site, valid op) of a space timed, the
baseline ratios, the network-level estimate recomputed from the per-site rows, counts and traffic, the CLI's
text, JSON and one-line errors. CPU only and tiny (a few seconds in all), except the ``gpu`` test."""

import json
import math
from pathlib import Path

import pytest
import torch

from pflnas.cli.main import main
from pflnas.errors import ConfigError
from pflnas.measure.context import SpeedConfig
from pflnas.measure.opbench import DEFAULT_BASELINE, benchmark_ops, default_image_size, site_baseline
from pflnas.measure.opbench_results import OpBenchReport
from pflnas.measure.report import format_report
from pflnas.ops import PARAM_FREE, get_op
from pflnas.spaces.config import load_space

pytestmark = pytest.mark.usefixtures("one_thread")  # timings: no thread contention

REPO = Path(__file__).resolve().parents[1]
DARTS_V2 = REPO / "experiments/archs/darts_v2.json"
TINY_RESNET = {"depths": [1, 2], "widths": [4, 8], "stem_width": 8}
TINY_VIT = {"dim": 12, "depth": 2, "heads": 3}
CFG = SpeedConfig(batch_size=2, warmup=1, repeats=2, threads=1)
FAST = ["--warmup", "1", "--repeats", "2", "--batch-size", "2", "--threads", "1"]
RESNET_CLI = ["--space", "resnet50_block", "--set", "space.skeleton={depths: [1, 2], widths: [4, 8]}"]
RESNET_CLI += ["--set", "space.skeleton.stem_width=8", "--image-size", "32"]


def tiny_resnet():
    return load_space("resnet50_block").replace(skeleton=TINY_RESNET)


def tiny_vit():
    return load_space("vit_s_mixer").replace(skeleton=TINY_VIT)


def tiny_cell():
    return load_space("cell_v1").replace(init_channels=4)


@pytest.fixture(scope="module")
def resnet() -> OpBenchReport:
    return benchmark_ops(tiny_resnet(), 32, CFG)


@pytest.fixture(scope="module")
def vit() -> OpBenchReport:
    return benchmark_ops(tiny_vit(), 32, CFG)


@pytest.fixture(scope="module")
def cell() -> OpBenchReport:
    return benchmark_ops(tiny_cell(), 32, CFG)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err):
    assert code == 2 and out == ""
    assert err.startswith("pflnas profile: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def recompute_network(report: OpBenchReport, op: str) -> tuple[float, float, int, int, list[int]]:
    """The network estimate of ``op`` from the per-site rows (the baseline where ``op`` is missing)."""
    fwd = fb = 0.0
    params = macs = 0
    substituted = []
    for s in report.sites:
        row = s.get(op)
        if row is None:
            row = s.get(s.baseline)
            substituted.append(s.index)
        fwd += s.site.blocks * row.forward.median
        fb += s.site.blocks * row.forward_backward.median
        params += s.site.blocks * row.params
        macs += s.site.blocks * row.macs
    return fwd, fb, params, macs, substituted


def check_report(report: OpBenchReport, space, image_size: int) -> None:
    """What holds for every report: every (site, valid op) present in the space's order, the baseline rows,
    positive times, parameter-free rows, traffic, and the network estimate against a recomputation."""
    sites = space.op_sites(image_size)
    assert [s.site for s in report.sites] == sites and [s.index for s in report.sites] == list(
        range(len(sites))
    )
    for s in report.sites:
        valid = [op for op in space.ops_at(s.site.stride) if not get_op(op).is_zero]
        assert [m.op for m in s.ops] == valid
        assert s.get("none") is None
        assert s.baseline in valid
        base = s.get(s.baseline)
        assert base.forward_ratio == 1.0 and base.forward_backward_ratio == 1.0
        for m in s.ops:
            for stats in (m.forward, m.forward_backward):
                assert len(stats.times_ms) == CFG.repeats and all(t > 0 for t in stats.times_ms)
                assert stats.batch_size == CFG.batch_size
            assert m.forward_ratio == m.forward.median / base.forward.median
            assert m.forward_backward_ratio == m.forward_backward.median / base.forward_backward.median
            assert m.param_free == (get_op(m.op).role(s.site.stride) == PARAM_FREE)
            if m.param_free and report.op_context != "token":
                assert m.params == 0 and m.macs == 0
            if m.op in ("identity", "skip_connect") and m.param_free:
                assert m.traffic_bytes == 0 and m.gb_per_s is None  # returns its input: nothing moves
            else:
                assert m.traffic_bytes > 0 and m.gb_per_s > 0
            assert m.output_shape[0] == CFG.batch_size
    assert len(report.network) == len(report.ops)
    for n in report.network:
        fwd, fb, params, macs, substituted = recompute_network(report, n.op)
        assert n.forward_ms == pytest.approx(fwd) and n.forward_backward_ms == pytest.approx(fb)
        assert (n.params, n.macs, list(n.substituted_sites)) == (params, macs, substituted)
        assert n.substituted_blocks == sum(report.sites[i].site.blocks for i in substituted)
        assert n.forward_ratio == pytest.approx(fwd / report.baseline_forward_ms)
        assert n.forward_backward_ratio == pytest.approx(fb / report.baseline_forward_backward_ms)
    base_fwd = sum(s.site.blocks * s.get(s.baseline).forward.median for s in report.sites)
    assert report.baseline_forward_ms == pytest.approx(base_fwd)
    ctx = report.context
    assert (ctx.batch_size, ctx.warmup, ctx.repeats, ctx.threads) == (2, 1, 2, 1)
    assert json.loads(json.dumps(report.to_dict()))["space"] == space.name


# --- library -------------------------------------------------------------------------------------------
def test_resnet_block_space(resnet):
    space = tiny_resnet()
    check_report(resnet, space, 32)
    assert resnet.op_context == "bottleneck" and resnet.traffic_dtype == "float32" and resnet.unit == "blocks"
    strides = [s.site.stride for s in resnet.sites]
    assert strides == [1, 2, 1]  # stage 0 stride 1; stage 1: its first block at stride 2, then stride 1
    for s in resnet.sites:
        assert s.baseline == DEFAULT_BASELINE and s.baseline_reason == "default"
        assert (s.get("identity") is None) == (s.site.stride == 2)  # identity only at stride 1
        assert (s.get("avg_pool_2x2_conv_3x3") is None) == (s.site.stride == 1)  # and this only at stride 2
        c, h = s.site.channels, s.site.height
        assert s.input_shape == (2, c, h, h)
        assert all(m.output_shape == (2, c, h // s.site.stride, h // s.site.stride) for m in s.ops)
        conv, dw, pool = s.get("conv_3x3"), s.get("dw_conv_3x3"), s.get("max_pool_3x3")
        assert conv.params == 9 * c * c + 2 * c and dw.params == 9 * c + 2 * c  # conv + BN weight and bias
        assert conv.macs > dw.macs > 0 and pool.macs == 0
        out = 2 * c * (h // s.site.stride) ** 2
        assert pool.traffic_bytes == 4 * (2 * c * h * h + out)  # input + output, float32
        assert conv.traffic_bytes == 4 * (2 * c * h * h + out + conv.params + 2 * c)  # + BN running stats
    identity = resnet.network_of("identity")
    assert [resnet.sites[i].site.stride for i in identity.substituted_sites] == [2]
    hybrid = resnet.network_of("avg_pool_2x2_conv_3x3")
    assert [resnet.sites[i].site.stride for i in hybrid.substituted_sites] == [1, 1]
    conv = resnet.network_of("conv_3x3")
    assert conv.forward_ratio == 1.0 and conv.forward_backward_ratio == 1.0 and not conv.substituted_sites
    assert resnet.network_of("max_pool_3x3").params == 0


def test_token_space(vit):
    check_report(vit, tiny_vit(), 32)
    (site,) = vit.sites
    assert site.site.blocks == 2 and site.site.heads == 3
    assert site.input_shape == (2, 8, 8, 12)  # [batch, H, W, dim]: 32 px, 4 px patches
    assert site.baseline == "attention" and site.baseline_reason == "the space's first op"
    attention, pool = site.get("attention"), site.get("max_pool_3x3")
    assert attention.params == 4 * 12 * 12 + 4 * 12  # qkv and proj with biases
    assert attention.macs == 64 * 12 * 12 * 4 + 2 * 64 * 64 * 12  # projections + QK^T and AV
    assert pool.param_free and pool.params > 0  # the mixer's expand / project linears
    assert attention.output_shape == pool.output_shape == (2, 8, 8, 12)
    assert vit.network_of("attention").forward_ratio == 1.0 and vit.unit == "blocks"


def test_cell_space(cell):
    space = tiny_cell()
    check_report(cell, space, 32)
    assert cell.unit == "edges" and default_image_size(space) == 32 and default_image_size(tiny_vit()) == 224
    for s in cell.sites:
        skip = s.get("skip_connect")
        # the identity at stride 1, a FactorizedReduce with parameters at stride 2
        assert skip.param_free == (s.site.stride == 1) and (skip.params == 0) == skip.param_free
    assert sum(s.site.blocks for s in cell.sites) == 8 * 14  # 8 cells of 14 edges


def test_only_and_baseline_fallback():
    report = benchmark_ops(tiny_resnet(), 32, CFG, ops=["max_pool_3x3"], baseline="identity")
    # the requested ops, plus every site's baseline: identity, and conv_3x3 where identity cannot run
    assert report.ops == ("conv_3x3", "max_pool_3x3", "identity")
    assert report.requested_baseline == "identity"
    for s in report.sites:
        if s.site.stride == 2:
            assert s.baseline == "conv_3x3" and s.baseline_reason == "identity cannot run at stride 2"
            assert [m.op for m in s.ops] == ["conv_3x3", "max_pool_3x3"]
        else:
            assert s.baseline == "identity" and s.baseline_reason == "requested"
        assert s.get(s.baseline).forward_ratio == 1.0
    base = sum(s.site.blocks * s.get(s.baseline).forward_backward.median for s in report.sites)
    assert report.baseline_forward_backward_ms == pytest.approx(base)
    assert report.network_of("identity").forward_ratio == pytest.approx(1.0)
    text = format_report(report)
    assert "baseline conv_3x3 (identity cannot run at stride 2)" in text
    assert "\nbaseline " in text  # the network table's baseline row (the baselines differ per site)


def test_site_baseline_rules():
    space = tiny_resnet()
    assert site_baseline(space, 1) == ("conv_3x3", "default")
    assert site_baseline(space, 2, "avg_pool_2x2_conv_3x3") == ("avg_pool_2x2_conv_3x3", "requested")
    assert site_baseline(space, 1, "avg_pool_2x2_conv_3x3")[0] == "conv_3x3"
    darts = load_space("darts")  # no conv_3x3, and 'none' first: the first benchmarkable op
    assert site_baseline(darts, 1) == ("max_pool_3x3", "the space's first op")


def test_amp_channels_last_and_threads_restored():
    threads = torch.get_num_threads()
    cfg = SpeedConfig(batch_size=2, warmup=0, repeats=1, amp=True, channels_last=True, threads=2)
    report = benchmark_ops(tiny_resnet(), 16, cfg, ops=["max_pool_3x3"])
    assert torch.get_num_threads() == threads
    assert report.traffic_dtype == "bfloat16" and report.context.dtype.startswith("bfloat16 autocast")
    assert report.context.memory_format == "channels_last" and report.context.threads == 2
    s = report.sites[0]
    c, h = s.site.channels, s.site.height
    assert s.get("max_pool_3x3").traffic_bytes == 2 * (2 * 2 * c * h * h)  # input + output, 2 bytes each
    token = benchmark_ops(tiny_vit(), 32, cfg)  # the token grid is not made channels-last
    assert token.sites[0].get("attention").forward.median > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"ops": ["conv_9x9"]},
            "ops: unknown op conv_9x9 for space 'resnet50_block'; its ops are conv_3x3, ",
        ),
        ({"ops": ["none"]}, "unknown op none"),
        ({"baseline": "attention"}, "baseline: unknown op attention"),
        ({"ops": []}, "at least one op"),
        ({"image_size": 0}, "image size must be a positive integer"),
    ],
)
def test_library_errors(kwargs, match):
    image_size = kwargs.pop("image_size", 32)
    with pytest.raises(ConfigError, match=match):
        benchmark_ops(tiny_resnet(), image_size, CFG, **kwargs)


# --- CLI -----------------------------------------------------------------------------------------------
def test_cli_text(capsys):
    code, out, err = run_cli(capsys, "profile", "--ops", *RESNET_CLI, *FAST)
    assert code == 0 and (err == "" or err.startswith("warning: system load"))  # a busy machine is flagged
    lines = out.splitlines()
    assert lines[0].startswith("context: cpu (") and "1 threads" in out and "warmup 1, repeats 2" in out
    assert "space resnet50_block (bottleneck ops), image 32, batch 2" in out
    assert all(len(line) <= 110 for line in lines)
    titles = [i for i, line in enumerate(lines) if line.startswith("stage ")]
    assert [lines[i].split(":")[0] for i in titles] == [
        "stage 0, stride 1",
        "stage 1, stride 2",
        "stage 1, stride 1",
    ]
    assert "stage 1, stride 2: 8 ch, 32x32 -> 16x16, 1 block; baseline conv_3x3" in lines
    for i in titles:
        header = lines[i + 1]
        assert header.split()[:4] == ["op", "free", "params", "MACs"] and "fwd ms ± IQR" in header
        assert lines[i + 2].startswith("conv_3x3 ") and lines[i + 2].endswith("1.00x  1.00x")
        assert " no " in lines[i + 2] and len(lines[i + 2]) == len(header)  # aligned
    pool = next(line for line in lines if line.startswith("max_pool_3x3 "))
    assert pool.split()[1:4] == ["yes", "0", "0"]
    net = next(i for i, line in enumerate(lines) if line.startswith("network estimate: every block runs"))
    table = lines[net:]
    assert any(line.startswith("conv_3x3 ") and "1.00x" in line for line in table)
    assert any(line.startswith("identity* ") for line in table)
    assert any(line.startswith("avg_pool_2x2_conv_3x3** ") for line in table)
    assert lines[-2].startswith("* identity cannot run at stride 2 (1 block, stage 1): conv_3x3 is counted")
    assert lines[-1].startswith("** avg_pool_2x2_conv_3x3 cannot run at stride 1 (2 blocks, stages 0, 1)")


def test_cli_json_only_baseline_and_defaults(capsys):
    code, out, _ = run_cli(
        capsys,
        "profile",
        "--ops",
        *RESNET_CLI,
        *FAST,
        "--only",
        "dw_conv_3x3",
        "--baseline",
        "max_pool_3x3",
        "--json",
    )
    data = json.loads(out)
    assert code == 0 and data["space"] == "resnet50_block" and data["image_size"] == 32
    assert data["ops"] == ["dw_conv_3x3", "max_pool_3x3"] and data["requested_baseline"] == "max_pool_3x3"
    assert data["context"]["batch_size"] == 2 and data["context"]["threads"] == 1
    for site in data["sites"]:
        assert site["baseline"] == "max_pool_3x3" and site["channels"] in (4, 8)
        rows = {r["op"]: r for r in site["ops"]}
        assert rows["max_pool_3x3"]["forward_ratio"] == 1.0 and rows["max_pool_3x3"]["params"] == 0
        assert len(rows["dw_conv_3x3"]["forward"]["times_ms"]) == 2
        assert rows["dw_conv_3x3"]["forward_backward"]["median_ms"] > 0
    assert [n["op"] for n in data["network"]["ops"]] == ["dw_conv_3x3", "max_pool_3x3"]

    # cell space: --set space.init_channels, default image size 32
    code, out, _ = run_cli(
        capsys, "profile", "--ops", "--space", "cell_v1", "--set", "space.init_channels=4", *FAST,
        "--only", "max_pool_3x3", "--json",
    )  # fmt: skip
    data = json.loads(out)
    assert code == 0 and data["image_size"] == 32 and data["op_context"] == "cell"
    assert data["sites"][0]["channels"] == 4 and data["ops"] == ["conv_3x3", "max_pool_3x3"]

    # block space: default image size 224 (a 56x56 grid after the ImageNet stem)
    code, out, _ = run_cli(
        capsys, "profile", "--ops", "--space", "vit_s_mixer", "--set", "space.skeleton.dim=12",
        "--set", "space.skeleton.heads=3", "--set", "space.skeleton.depth=1", *FAST, "--json",
    )  # fmt: skip
    data = json.loads(out)
    assert code == 0 and data["image_size"] == 224 and data["sites"][0]["input_shape"] == [2, 14, 14, 12]


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["--ops"], "--ops needs --space"),
        (["--ops", "--space", "vit_s_mixer", "--only", "conv_3x3"], "its ops are attention, max_pool_3x3"),
        (["--ops", "--space", "vit_s_mixer", "--baseline", "nope"], "--baseline: unknown op nope"),
        (["--ops", "--space", "resnet50_block", "--arch", DARTS_V2], "not both"),
        ([], "give --arch FILE ... (or --ops --space NAME)"),
        (["--space", "resnet50_block"], "give --arch FILE"),
        (["--arch", DARTS_V2, "--only", "conv_3x3"], "--only: only with --ops"),
        (["--ops", "--space", "cell_v1", "--init-channels", "4"], "--set space.KEY=VALUE"),
        (["--ops", "--space", "cell_v1", "--set", "run.epochs=1"], "only space.KEY=VALUE overrides"),
        (["--ops", "--space", "resnet50_block", "--set", "space.init_channels=8"], "cell spaces only"),
        (["--ops", "--space", "nope"], "unknown search space 'nope'"),
        (["--ops", "--space", "vit_s_mixer", "--image-size", "0"], "--image-size must be a positive integer"),
        (["--ops", "--space", "vit_s_mixer", "--image-size", "2"], "smaller than the patch size"),
    ],
)
def test_cli_errors(capsys, argv, phrase):
    code, out, err = run_cli(capsys, "profile", *argv)
    assert_one_line_error(code, out, err)
    assert phrase in err


# --- CUDA ----------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", [False, True])
def test_cuda(amp):
    cfg = SpeedConfig(device="cuda", batch_size=4, warmup=2, repeats=3, amp=amp, channels_last=amp)
    for space in (tiny_resnet(), tiny_vit()):
        report = benchmark_ops(space, 32, cfg)
        assert report.context.timer == "torch.cuda.Event"
        for s in report.sites:
            assert all(m.forward.median > 0 and m.forward_backward.median > 0 for m in s.ops)
            assert s.get(s.baseline).forward_ratio == 1.0
        assert all(math.isfinite(n.forward_ratio) for n in report.network)
