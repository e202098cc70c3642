"""ONNX export of a network, checked against PyTorch with ONNX Runtime before anything is written.

Needs the ``onnx`` package (``onnxscript`` for the dynamo exporter, ``onnxruntime`` for the parity check):
``pip install 'pflnas[export]'``. The trained network comes from :mod:`pflnas.trained`.
"""

from __future__ import annotations

import importlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from pflnas.errors import ConfigError, PflnasError
from pflnas.options import DEFAULT_OPSET, EXPORTERS
from pflnas.utils_io import atomic_write

INSTALL_HINT = "pip install 'pflnas[export]'"
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or raise one line that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise PflnasError(f"{purpose} needs the '{module}' package: {INSTALL_HINT}") from None


def _has(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class OnnxModel:
    """An exported ONNX model in memory: serialized bytes and how they were made."""

    data: bytes
    exporter: str
    opset: int
    note: str = ""  # why "auto" fell back to the TorchScript exporter, if it did


@dataclass(frozen=True)
class ParityReport:
    """ONNX Runtime against PyTorch on the same random inputs."""

    max_abs_diff: float
    logits_scale: float  # max |logit| of the PyTorch outputs
    limit: float  # rtol * max(1, logits_scale)
    batch_sizes: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.limit


def _export_dynamo(model: nn.Module, example: Tensor, opset: int) -> bytes:
    program = torch.onnx.export(
        model,
        (example,),
        None,
        dynamo=True,
        opset_version=opset,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    return program.model_proto.SerializeToString()


def _export_torchscript(model: nn.Module, example: Tensor, opset: int) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice and constant-folding chatter
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    return buffer.getvalue()


_EXPORT_FNS = {"dynamo": _export_dynamo, "torchscript": _export_torchscript}


def to_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
) -> OnnxModel:
    """Export ``model`` (put in eval mode) with a dynamic batch axis: input ``input``, output ``logits``.

    ``input_shape`` is ``(batch, channels, height, width)``; the batch size only matters for tracing.

    ``exporter="auto"`` uses torch's dynamo exporter when ``onnxscript`` is installed and ``opset >= 18``
    (it implements no lower opset), and falls back to the TorchScript exporter if that raises.
    """
    onnx = require("onnx", "ONNX export")
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if exporter == "dynamo":
        require("onnxscript", "the dynamo ONNX exporter")
        if opset < DEFAULT_OPSET:
            raise ConfigError(f"the dynamo exporter needs opset >= {DEFAULT_OPSET}, got {opset}")
    chosen = exporter
    if exporter == "auto":
        chosen = "dynamo" if _has("onnxscript") and opset >= DEFAULT_OPSET else "torchscript"
    model.eval()
    # torch.export specialises a dimension of size 1 to a constant, so trace with a batch of at least 2
    shape = (max(2, input_shape[0]), *input_shape[1:])
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    note = ""
    with torch.no_grad():
        try:
            data = _EXPORT_FNS[chosen](model, example, opset)
        except Exception as exc:
            if exporter != "auto" or chosen != "dynamo":
                raise PflnasError(f"the {chosen} ONNX exporter failed: {_first_line(exc)}") from None
            note = f"the dynamo exporter failed ({_first_line(exc)}); used the TorchScript exporter"
            chosen = "torchscript"
            data = _export_torchscript(model, example, opset)
    proto = onnx.load_model_from_string(data)
    onnx.checker.check_model(proto)
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise PflnasError(f"the {chosen} exporter wrote opset {written}, not the requested {opset}")
    return OnnxModel(data, chosen, opset, note)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def check_onnx_parity(
    model: nn.Module,
    onnx_model: bytes | str | Path,
    input_shape: tuple[int, ...],
    *,
    rtol: float = 1e-4,
    seed: int = 0,
) -> ParityReport:
    """Run ONNX Runtime (CPU) and ``model`` (eval mode, CPU) on random inputs of the given batch size
    and one more (which exercises the dynamic batch axis), and compare the logits."""
    ort = require("onnxruntime", "the ONNX parity check")
    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    batches = (input_shape[0], input_shape[0] + 1)
    diff = scale = 0.0
    for batch in batches:
        x = torch.randn((batch, *input_shape[1:]), generator=generator)
        with torch.no_grad():
            expected = model(x).float()
        got = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
        if got.shape != expected.shape:
            raise PflnasError(
                f"ONNX output shape {list(got.shape)} != PyTorch {list(expected.shape)} at batch {batch}"
            )
        diff = max(diff, (got - expected).abs().max().item())
        scale = max(scale, expected.abs().max().item())
    return ParityReport(diff, scale, rtol * max(1.0, scale), batches)


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    check: bool = True,
) -> tuple[OnnxModel, ParityReport | None]:
    """Export, check parity with ONNX Runtime (unless ``check=False``), then write ``path`` atomically.

    A failed check raises :class:`PflnasError` and writes nothing.
    """
    if check:
        require("onnxruntime", "the ONNX parity check")
    exported = to_onnx(model, input_shape, opset=opset, exporter=exporter)
    report = check_onnx_parity(model, exported.data, input_shape) if check else None
    if report is not None and not report.ok:
        raise PflnasError(
            f"ONNX Runtime disagrees with PyTorch: max |diff| {report.max_abs_diff:.3g} > {report.limit:.3g}"
            f" (logits scale {report.logits_scale:.3g}); {path} not written"
        )
    atomic_write(path, lambda fh: fh.write(exported.data))
    return exported, report
