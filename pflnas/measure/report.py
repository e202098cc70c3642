"""The text of ``pflnas profile``: one network, several networks side by side, and the per-op benchmark.

Reports are computed as data first (dicts or :mod:`.opbench_results` records, the ``--json`` forms) and
only turned into text here, so the text and the JSON always show the same numbers; this module needs no
torch, so the CLI loads it cheaply.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pflnas.measure.opbench_results import NetworkEstimate, OpBenchReport, SiteBench

WIDTH = 110  # --ops report width


# --- numbers -------------------------------------------------------------------------------------------
def _count(n: int) -> str:
    """``950``, ``36.9K``, ``2.36M``, ``115M``, ``1.85G``."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            v = n / div
            return f"{v:.2f}{suffix}" if v < 10 else f"{v:.1f}{suffix}" if v < 100 else f"{v:.0f}{suffix}"
    return str(n)


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def _x(v: float | None) -> str:
    """``1.25x``; ``-`` for no ratio (a first row of zero)."""
    return "-" if v is None else f"{v:.2f}x"


def _table(rows: list[list[str]], left: int = 1) -> list[str]:
    """Aligned rows (two spaces apart): the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in rows
    ]


# --- networks (--arch) ---------------------------------------------------------------------------------
def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _context_line(context: dict[str, Any]) -> str:
    return (
        f"{context['device']} ({context['device_name']}), {context['threads']} threads, "
        f"torch {context['torch_version']}, {context['dtype']}, {context['memory_format']}, "
        f"warmup {context['warmup']}, repeats {context['repeats']}, latency at batch 1, "
        f"throughput and memory at batch {context['batch_size']}"
        + ("" if context.get("load_average") is None else f", system load {context['load_average']}")
    )


def contention_warning(context: dict[str, Any]) -> str | None:
    """A warning for stderr when the CPU looked oversubscribed while measuring (None otherwise)."""
    load, cpus = context.get("load_average"), context.get("cpu_count")
    if context["device"] != "cpu" or load is None or cpus is None or load <= cpus:
        return None
    return (
        f"warning: system load {load} on {cpus} CPUs: the CPU is oversubscribed and these timings may be "
        "unreliable (measure on an idle machine, or with fewer --threads)"
    )


def format_network(report: dict[str, Any], context: dict[str, Any] | None) -> str:
    """The text of ``pflnas profile --arch FILE``: counts, and the speed unless ``context`` is None."""
    net = report["network"]
    aux = "included" if report["params_include_auxiliary"] else "excluded"
    lines = [
        f"arch      {report['arch']} (space {report['space']})",
        f"network   {net['class']}: {net['dataset']}, {net['num_classes']} classes, "
        f"C={net['init_channels']}, layers={net['layers']}",
        f"input     {'x'.join(map(str, report['input_shape']))}",
        f"params    {report['params']:,} ({report['params'] / 1e6:.2f} M, auxiliary head {aux})",
        f"macs      {report['macs']:,} ({report['macs'] / 1e6:.2f} M; conv/linear/matmul only, eval mode)",
    ]
    if context is None:
        return "\n".join(lines)
    lat, thr, mem = report["latency"], report["throughput"], report["memory"]
    lines += [
        f"context   {_context_line(context)}",
        f"latency   {lat['median_ms']:.2f} ms ± IQR {lat['iqr_ms']:.2f} (median of {context['repeats']} "
        f"passes at batch 1; p10 {lat['p10_ms']:.2f}, p90 {lat['p90_ms']:.2f} ms)",
        f"speed     {thr['images_per_s']:,.1f} images/s at batch {thr['batch_size']} "
        f"(median {thr['median_ms']:.2f} ms ± IQR {thr['iqr_ms']:.2f} per batch)",
        f"memory    {_mib(mem['activation_bytes'])} peak activation memory at batch {mem['batch_size']} "
        f"({_mib(mem['peak_bytes'])} with weights and input), measured by {mem['method']}",
    ]
    return "\n".join(lines)


def format_networks(reports: list[dict[str, Any]], context: dict[str, Any] | None) -> str:
    """The text of ``pflnas profile --arch FILE FILE ...``: one row per network, ratios to the first."""
    shape = "x".join(map(str, reports[0]["input_shape"][1:]))
    if context is not None:
        lines = [f"context: {_context_line(context)}; input {shape}"]
    else:
        lines = [f"input {shape}; speed not measured (--no-speed)"]
    header = ["arch", "network", "params", "x", "MACs", "x"]
    if context is not None:
        header += ["latency ms (± IQR)", "x", "images/s", "x", "peak act. mem", "x"]
    lines += _table([header, *(_network_row(r, context is not None) for r in reports)], left=2)
    lines.append("x: ratio to the first row (latency: time, higher is slower; images/s: higher is faster)")
    if context is not None:
        lines.append(
            f"peak act. mem: peak activation memory at batch {context['batch_size']}, "
            f"measured by {context['memory_method']}"
        )
    return "\n".join(lines)


def _network_row(r: dict[str, Any], speed: bool) -> list[str]:
    net, ratios = r["network"], r["ratios"]
    row = [
        r["arch"],
        f"{net['class']} C={net['init_channels']} L={net['layers']}",
        f"{r['params'] / 1e6:.3f} M",
        _x(ratios["params"]),
        f"{r['macs'] / 1e6:.1f} M",
        _x(ratios["macs"]),
    ]
    if speed:
        row += [
            f"{r['latency']['median_ms']:.2f} ± {r['latency']['iqr_ms']:.2f}",
            _x(ratios["latency"]),
            f"{r['throughput']['images_per_s']:,.1f}",
            _x(ratios["throughput"]),
            _mib(r["memory"]["activation_bytes"]),
            _x(ratios["activation_memory"]),
        ]
    return row


# --- ops (--ops) ---------------------------------------------------------------------------------------
def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, subsequent_indent="  ", break_on_hyphens=False)


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit if n != 1 else unit[:-1]}"


def _site_title(report: OpBenchReport, s: SiteBench) -> str:
    site = s.site
    base = f"baseline {s.baseline}"
    if s.baseline_reason not in ("default", "requested"):
        base += f" ({s.baseline_reason})"
    n = _plural(site.blocks, report.unit)
    if report.op_context == "token":
        grid = f"dim {site.channels}, {site.heads} heads, {site.height}x{site.width} tokens"
        return f"stage {site.stage}: {grid}, {n}; {base}"
    grid = f"{site.channels} ch, {site.height}x{site.width}"
    if site.stride != 1:
        out = s.ops[0].output_shape
        grid += f" -> {out[-2]}x{out[-1]}"
    return f"stage {site.stage}, stride {site.stride}: {grid}, {n}; {base}"


def _gbps(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}" if v < 10 else f"{v:.1f}"


def _substitution_note(report: OpBenchReport, n: NetworkEstimate, mark: str) -> str:
    sites = [report.sites[i] for i in n.substituted_sites]
    strides = sorted({s.site.stride for s in sites})
    stages = ", ".join(str(st) for st in sorted({s.site.stage for s in sites}))
    bases = sorted({s.baseline for s in sites})
    base = f"{bases[0]} is" if len(bases) == 1 else "each site's baseline is"
    return (
        f"{mark} {n.op} cannot run at stride {', '.join(map(str, strides))} "
        f"({_plural(n.substituted_blocks, report.unit)}, stage{'s' * (len(sites) > 1)} {stages}): "
        f"{base} counted there"
    )


def format_report(report: OpBenchReport) -> str:
    """The text of ``pflnas profile --ops`` (lines of at most 110 characters but for very long op or
    CPU names): the context, one table per site, the network-level estimate."""
    ctx = report.context
    lines = [
        *_wrap(f"context: {ctx.describe()}"),
        *_wrap(
            f"space {report.space} ({report.op_context} ops), image {report.image_size}, "
            f"batch {report.batch_size}; times: ms per batch, median ± IQR of {ctx.repeats} passes"
        ),
    ]
    for s in report.sites:
        lines += ["", *_wrap(_site_title(report, s)), *_site_table(s)]
    lines += [
        "",
        *_wrap(
            "free: parameter-free op; MACs: one image's forward (conv/linear/matmul); fwd: eval forward; "
            "f+b: train forward+backward; GB/s: minimum forward memory traffic (input + output + weights "
            f"at {report.traffic_dtype}; none for an op returning its input) / median fwd time; "
            "x: median time / the site baseline's"
        ),
    ]
    return "\n".join(lines + _network_lines(report))


def _site_table(s: SiteBench) -> list[str]:
    rows = [["op", "free", "params", "MACs", "fwd ms ± IQR", "fwd+bwd ms ± IQR", "GB/s", "fwd x", "f+b x"]]
    for m in s.ops:
        rows.append(
            [
                m.op,
                "yes" if m.param_free else "no",
                _count(m.params),
                _count(m.macs),
                f"{_ms(m.forward.median)} ± {_ms(m.forward.iqr)}",
                f"{_ms(m.forward_backward.median)} ± {_ms(m.forward_backward.iqr)}",
                _gbps(m.gb_per_s),
                _x(m.forward_ratio),
                _x(m.forward_backward_ratio),
            ]
        )
    return _table(rows)


def _network_lines(report: OpBenchReport) -> list[str]:
    """The network-level estimate: its legend, one row per op, and a note per op substituted somewhere."""
    baselines = report.baseline_ops()
    single = baselines[0] if len(baselines) == 1 else None
    lines = [
        "",
        *_wrap(
            f"network estimate: every {report.unit[:-1]} runs the op; sum over sites of {report.unit} x "
            "median ms per batch (candidate ops only, the rest of the network is not included); x: ratio "
            f"to the network of {single or 'each site baseline (the baseline row)'}"
        ),
    ]
    rows = [["op", "params", "MACs", "fwd ms", "fwd x", "fwd+bwd ms", "f+b x"]]
    if single is None:
        base_fwd, base_fb = _ms(report.baseline_forward_ms), _ms(report.baseline_forward_backward_ms)
        rows.append(["baseline", "", "", base_fwd, _x(1.0), base_fb, _x(1.0)])
    notes: list[str] = []
    for n in report.network:
        mark = ""
        if n.substituted_sites:
            mark = "*" * (len(notes) + 1)
            notes += _wrap(_substitution_note(report, n, mark))
        rows.append(
            [
                n.op + mark,
                _count(n.params),
                _count(n.macs),
                _ms(n.forward_ms),
                _x(n.forward_ratio),
                _ms(n.forward_backward_ms),
                _x(n.forward_backward_ratio),
            ]
        )
    return lines + _table(rows) + notes
