"""The records of the per-op benchmark: one op at one site, a site's ops, an op's network estimate, and the
whole report, each with the JSON form ``pflnas profile --ops --json`` prints.

They are kept apart from the measuring so that the text report (:mod:`.report`) and the callers that only
read results depend on the records alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pflnas.measure.context import MeasurementContext
from pflnas.measure.timing import TimingStats
from pflnas.spaces.skeletons import OpSite


@dataclass(frozen=True)
class OpMeasurement:
    """One op at one site: counts, traffic estimate, both timings and the ratios to the site's baseline."""

    op: str
    param_free: bool  # the op's spatial / token-mixing operation has no parameters at this stride
    params: int
    macs: int  # one image's forward (conv/linear/matmul only)
    traffic_bytes: int  # minimum forward memory traffic at the batch (see opbench._traffic_bytes)
    output_shape: tuple[int, ...]
    forward: TimingStats
    forward_backward: TimingStats
    forward_ratio: float  # median forward time / the site baseline's
    forward_backward_ratio: float

    @property
    def gb_per_s(self) -> float | None:
        """Achieved bandwidth: traffic over the median forward time (None without traffic or time)."""
        if self.traffic_bytes == 0 or self.forward.median <= 0:
            return None
        return self.traffic_bytes / (self.forward.median * 1e6)

    def to_dict(self, include_times: bool = True) -> dict[str, Any]:
        return {
            "op": self.op,
            "param_free": self.param_free,
            "params": self.params,
            "macs": self.macs,
            "traffic_bytes": self.traffic_bytes,
            "gb_per_s": self.gb_per_s,
            "output_shape": list(self.output_shape),
            "forward": self.forward.to_dict(include_times),
            "forward_backward": self.forward_backward.to_dict(include_times),
            "forward_ratio": self.forward_ratio,
            "forward_backward_ratio": self.forward_backward_ratio,
        }


@dataclass(frozen=True)
class SiteBench:
    """Every measured op at one site, in the space's op order, and the site's baseline."""

    index: int
    site: OpSite
    input_shape: tuple[int, ...]  # at the benchmark's batch
    baseline: str
    baseline_reason: str  # "requested", "default", or why another op is the baseline here
    ops: tuple[OpMeasurement, ...]

    def get(self, op: str) -> OpMeasurement | None:
        return next((m for m in self.ops if m.op == op), None)

    @property
    def baseline_row(self) -> OpMeasurement:
        return next(m for m in self.ops if m.op == self.baseline)

    def to_dict(self, include_times: bool = True) -> dict[str, Any]:
        s = self.site
        return {
            "index": self.index,
            "stage": s.stage,
            "stride": s.stride,
            "channels": s.channels,
            "height": s.height,
            "width": s.width,
            "heads": s.heads,
            "blocks": s.blocks,
            "input_shape": list(self.input_shape),
            "baseline": self.baseline,
            "baseline_reason": self.baseline_reason,
            "ops": [m.to_dict(include_times) for m in self.ops],
        }


@dataclass(frozen=True)
class NetworkEstimate:
    """An op's candidate-op slots summed over a network where every block runs it (times in ms, per batch).

    ``substituted_sites`` are the sites where the op cannot be placed and the site's baseline's numbers
    were used; ``substituted_blocks`` counts their blocks."""

    op: str
    forward_ms: float
    forward_backward_ms: float
    forward_ratio: float  # over the baseline network's
    forward_backward_ratio: float
    params: int
    macs: int
    substituted_sites: tuple[int, ...]
    substituted_blocks: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "forward_ms": self.forward_ms,
            "forward_backward_ms": self.forward_backward_ms,
            "forward_ratio": self.forward_ratio,
            "forward_backward_ratio": self.forward_backward_ratio,
            "params": self.params,
            "macs": self.macs,
            "substituted_sites": list(self.substituted_sites),
            "substituted_blocks": self.substituted_blocks,
        }


@dataclass(frozen=True)
class OpBenchReport:
    space: str
    op_context: str  # "cell", "bottleneck" or "token"
    image_size: int
    batch_size: int
    traffic_dtype: str  # the dtype the traffic estimate counts bytes at
    requested_baseline: str | None
    ops: tuple[str, ...]  # the measured ops (the requested ones and the baselines), in the space's order
    sites: tuple[SiteBench, ...]
    network: tuple[NetworkEstimate, ...]  # one per op of ``ops``
    baseline_forward_ms: float  # the network running each site's baseline
    baseline_forward_backward_ms: float
    context: MeasurementContext

    @property
    def unit(self) -> str:
        """What ``OpSite.blocks`` counts: cell edges or blocks."""
        return "blocks" if self.op_context != "cell" else "edges"

    def network_of(self, op: str) -> NetworkEstimate:
        return next(n for n in self.network if n.op == op)

    def baseline_ops(self) -> tuple[str, ...]:
        """The baselines used, in site order, without repeats."""
        return tuple(dict.fromkeys(s.baseline for s in self.sites))

    def to_dict(self, include_times: bool = True) -> dict[str, Any]:
        return {
            "space": self.space,
            "op_context": self.op_context,
            "image_size": self.image_size,
            "batch_size": self.batch_size,
            "traffic_dtype": self.traffic_dtype,
            "requested_baseline": self.requested_baseline,
            "ops": list(self.ops),
            "context": self.context.to_dict(),
            "sites": [s.to_dict(include_times) for s in self.sites],
            "network": {
                "note": (
                    f"candidate-op time of a network whose {self.unit} all run the op: sum over sites of "
                    f"{self.unit} x median time per batch (ms); sites where the op cannot be placed use "
                    "the site's baseline; the rest of the network is not included"
                ),
                "baseline": {
                    "ops": [s.baseline for s in self.sites],
                    "forward_ms": self.baseline_forward_ms,
                    "forward_backward_ms": self.baseline_forward_backward_ms,
                },
                "ops": [n.to_dict() for n in self.network],
            },
        }
