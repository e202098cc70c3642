"""NAS-Bench-201 ground truth, offline: CIFAR-10 test accuracy of all 15,625 cells.

A search on the ``nb201`` space can be scored against true trained accuracy without training anything.
The numbers come from the PyPI package ``analog-nasbench`` (extra ``bench``), whose pickle is read here
directly and safely (see :func:`data_path`, :class:`NB201Table`). pflnas' ``nb201`` space has the same
nodes and op semantics, so a cell maps one to one onto the package's key (see :func:`encode_index`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pflnas.arch.record import Architecture, CellArch, Edge
from pflnas.errors import ArchitectureError, ConfigError
from pflnas.ops import PARAM_FREE, get_op
from pflnas.spaces.config import SpaceConfig, load_space

DISTRIBUTION = "analog-nasbench"
DATA_FILE = "analognasbench/data.anb"
INSTALL_HINT = "pip install 'pflnas[bench]'"
# the package's op index -> pflnas op name
OPS = ("skip_connect", "none", "conv_3x3", "conv_1x1", "avg_pool_3x3")
# the package's key position -> pflnas (node, source)
EDGES = ((1, 0), (2, 0), (3, 0), (2, 1), (3, 1), (3, 2))
METRICS = ("baseline_accuracy", "ptq_accuracy", "qat_accuracy", "noisy_accuracy", "analog_accuracy")
NB201_NAMES = {"conv_3x3": "nor_conv_3x3", "conv_1x1": "nor_conv_1x1"}  # pflnas -> NAS-Bench-201 op names
NUM_CELLS = len(OPS) ** len(EDGES)

Code = tuple[int, ...]  # one cell as the package's key: an op index per edge position


class _Record:
    """Stands in for ``analognasbench.data.Architecture`` and ``DriftMeasurement`` (fills ``__dict__``)."""


class _SafeUnpickler(pickle.Unpickler):
    """Accepts only the package's two record classes, so nothing else in the data file can run."""

    ALLOWED = {("analognasbench.data", "Architecture"), ("analognasbench.data", "DriftMeasurement")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return _Record
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the NAS-Bench-201 data file")


def data_path() -> Path:
    """The installed ``analognasbench/data.anb`` (ConfigError naming the install command if missing).

    Install with ``pip install 'pflnas[bench]'``. The package's module imports ``pkg_resources``, which
    current setuptools no longer ships, so the file is found through the distribution's file list and read
    here (with :class:`_SafeUnpickler`) instead of through the package.
    """
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"NAS-Bench-201 ground truth needs the package {DISTRIBUTION}: {INSTALL_HINT}"
        ) from None
    for f in dist.files or ():
        if str(f) == DATA_FILE:
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    raise ConfigError(
        f"{DISTRIBUTION} {dist.version} is installed without {DATA_FILE}; reinstall it: {INSTALL_HINT}"
    )


def encode_index(code: Code) -> int:
    """The flat index of a key: base-5 digits, edge position 0 most significant (``acc.reshape([5] * 6)``
    puts position i on axis i).

    Key encoding, checked against the data (see tests/test_bench_nb201.py):

    * op index: 0 ``skip_connect``, 1 ``none``, 2 ``conv_3x3``, 3 ``conv_1x1``, 4 ``avg_pool_3x3``; the
      all-``none`` cell is at chance (10.0), the all-``conv_3x3`` cell (93.2) beats all-``conv_1x1`` (89.5);
    * position: edges 0->1, 0->2, 0->3, 1->2, 1->3, 2->3; exactly the three 3-edge cuts of the DAG under
      this order ({0->1, 0->2, 0->3}, {0->3, 1->3, 2->3}, {0->1, 0->3, 2->3}) are at chance for every choice
      of the other edges, and the best cells keep the ResNet-like ``skip_connect`` on 0->3.

    pflnas' ``nb201`` space has the same nodes (0 input, 1..3 intermediate, 3 the output) and the same op
    semantics (ReLU-Conv-BN convs, avg-pool without padding counted, identity), so a cell maps one to one.
    """
    return sum(op * len(OPS) ** (len(EDGES) - 1 - i) for i, op in enumerate(code))


def decode_index(index: int) -> Code:
    """The key at a flat index (inverse of :func:`encode_index`)."""
    digits = []
    for _ in EDGES:
        index, op = divmod(index, len(OPS))
        digits.append(op)
    return tuple(reversed(digits))


def _cell_share(code: Code) -> float:
    """Parameter-free share of a cell's non-``none`` edges (all NB201 edges are stride 1); NaN if all none."""
    specs = [get_op(OPS[i]) for i in code]
    counted = [s.role(1) == PARAM_FREE for s in specs if not s.is_zero]
    return sum(counted) / len(counted) if counted else math.nan


@dataclass(frozen=True)
class NB201Stats:
    """Facts about the whole table and its best ``top_fraction`` of cells."""

    cells: int
    best: float
    mean: float
    median: float
    top_fraction: float
    top_cells: int
    top_threshold: float  # the lowest accuracy among the top cells
    top_mean: float
    top_param_free_share: float  # mean over the top cells of their parameter-free share

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class NB201Table:
    """CIFAR-10 test accuracy (percent) of every NAS-Bench-201 cell, indexed by the package's key.

    The package's pickle ``analognasbench/data.anb`` is ``{(i0, ..., i5): Architecture}``, where
    ``Architecture.baseline_accuracy`` is the digital (full-precision) CIFAR-10 test accuracy in percent
    after the NAS-Bench-201 200-epoch protocol, retrained by AnalogNAS-Bench (best cell 94.07;
    NAS-Bench-201's own best is 94.37), alongside analog-hardware metrics (``ptq_accuracy``,
    ``qat_accuracy``, ``noisy_accuracy``, ``analog_accuracy``).
    """

    def __init__(self, accuracy: np.ndarray, metric: str = "baseline_accuracy", source: str = ""):
        if accuracy.shape != (NUM_CELLS,) or not np.isfinite(accuracy).all():
            raise ConfigError(f"NAS-Bench-201 table must hold {NUM_CELLS} finite accuracies")
        self.acc = accuracy
        self.metric = metric
        self.source = source
        self.space = load_space("nb201")
        self._order = np.argsort(-accuracy, kind="stable")

    def __len__(self) -> int:
        return len(self.acc)

    # --- codes <-> architectures ---------------------------------------------------------------
    def encode(self, arch: Architecture) -> Code:
        """The package key of an ``nb201_cell`` architecture (every cell of the record must be the same)."""
        space = arch.space
        if space.kind != "nb201_cell" or space.nodes != 3:
            raise ArchitectureError(
                f"NAS-Bench-201 scores nb201_cell spaces with 3 intermediate nodes; "
                f"this architecture is from space {space.name!r} ({space.kind}, {space.nodes} nodes)"
            )
        cells = {tuple(sorted((e.node, e.source, e.op) for e in c.edges)) for c in arch.cells}
        if len(cells) != 1:
            raise ArchitectureError(
                f"NAS-Bench-201 has one cell repeated through the network; this architecture has "
                f"{len(cells)} different cells (search with space.alpha_mode=shared)"
            )
        ops = {(node, src): op for node, src, op in next(iter(cells))}
        code = []
        for edge in EDGES:
            op = ops[edge]
            if op not in OPS:
                raise ArchitectureError(
                    f"edge {edge[0]}<-{edge[1]}: op {op!r} is not a NAS-Bench-201 op ({', '.join(OPS)})"
                )
            code.append(OPS.index(op))
        return tuple(code)

    def architecture(self, code: Code, provenance: dict[str, Any] | None = None) -> Architecture:
        """The pflnas ``nb201`` architecture of a package key."""
        if len(code) != len(EDGES) or not all(0 <= i < len(OPS) for i in code):
            raise ArchitectureError(f"not a NAS-Bench-201 key: {code!r} (6 op indices in 0..4)")
        return cell_architecture(self.space, code, provenance)

    # --- queries -------------------------------------------------------------------------------
    def accuracy_of(self, code: Code) -> float:
        return float(self.acc[encode_index(code)])

    def accuracy(self, arch: Architecture) -> float:
        """True CIFAR-10 test accuracy (percent) of an ``nb201`` architecture."""
        return self.accuracy_of(self.encode(arch))

    def best(self) -> tuple[Architecture, float]:
        index = int(self._order[0])
        return self.architecture(decode_index(index)), float(self.acc[index])

    def best_accuracy(self) -> float:
        return float(self.acc[self._order[0]])

    def top_codes(self, fraction: float = 0.01) -> list[Code]:
        """The best ``ceil(fraction * 15625)`` cells, best first."""
        if not 0 < fraction <= 1:
            raise ConfigError(f"top fraction must be in (0, 1], got {fraction}")
        n = math.ceil(fraction * len(self.acc))
        return [decode_index(int(i)) for i in self._order[:n]]

    def stats(self, fraction: float = 0.01) -> NB201Stats:
        top = self.top_codes(fraction)
        top_acc = np.array([self.accuracy_of(c) for c in top])
        shares = [s for s in (_cell_share(c) for c in top) if not math.isnan(s)]
        return NB201Stats(
            cells=len(self.acc),
            best=float(self.acc.max()),
            mean=float(self.acc.mean()),
            median=float(np.median(self.acc)),
            top_fraction=fraction,
            top_cells=len(top),
            top_threshold=float(top_acc.min()),
            top_mean=float(top_acc.mean()),
            top_param_free_share=float(np.mean(shares)) if shares else math.nan,
        )

    def evaluate(self, arch: Architecture) -> dict[str, float]:
        """The table as a multi-trial evaluator: ``accuracy`` a fraction, ``accuracy_percent`` as stored."""
        percent = self.accuracy(arch)
        return {"accuracy": percent / 100.0, "accuracy_percent": percent}


def cell_architecture(
    space: SpaceConfig, code: Code, provenance: dict[str, Any] | None = None
) -> Architecture:
    """An architecture of ``space`` (an ``nb201_cell`` space) whose every cell is the package key ``code``."""
    ops = dict(zip(EDGES, (OPS[i] for i in code)))
    edges = tuple(Edge(node, src, ops[(node, src)]) for node, src in space.edges())
    cells = tuple(CellArch(name, ctype, edges, space.concat()) for name, ctype in space.alpha_groups())
    return Architecture(space, cells, provenance=dict(provenance or {}))


def nb201_string(arch: Architecture) -> str:
    """NAS-Bench-201's notation of the cell, e.g. ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|``."""
    cell = arch.cells[0]
    ops = {(e.node, e.source): NB201_NAMES.get(e.op, e.op) for e in cell.edges}
    nodes = sorted({e.node for e in cell.edges})
    return "+".join("|" + "|".join(f"{ops[(n, s)]}~{s}" for s in range(n)) + "|" for n in nodes)


@functools.lru_cache(maxsize=4)
def load_nb201_table(metric: str = "baseline_accuracy") -> NB201Table:
    """Load the table from the installed ``analog-nasbench`` data file (0.6 s; cached per process)."""
    if metric not in METRICS:
        raise ConfigError(f"unknown NAS-Bench-201 metric {metric!r}; choose one of {', '.join(METRICS)}")
    path = data_path()
    try:
        with path.open("rb") as fh:
            records = _SafeUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{path}: not a readable analog-nasbench data file ({exc}); {INSTALL_HINT}"
        ) from None
    if not isinstance(records, dict) or len(records) != NUM_CELLS:
        raise ConfigError(f"{path}: expected {NUM_CELLS} NAS-Bench-201 cells; reinstall: {INSTALL_HINT}")
    acc = np.full(NUM_CELLS, np.nan)
    for key, record in records.items():
        if not (isinstance(key, tuple) and len(key) == len(EDGES) and all(0 <= i < len(OPS) for i in key)):
            raise ConfigError(f"{path}: unexpected cell key {key!r}")
        acc[encode_index(key)] = float(getattr(record, metric))
    return NB201Table(acc, metric, str(path))
