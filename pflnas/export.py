"""Trained derived networks: read a retrain checkpoint into its network, and export it to ONNX.

A retrain checkpoint is a torch file, read with ``weights_only=True``, holding a dict with at least
``"model"`` (the network's ``state_dict``). ``pflnas retrain`` also stores ``"network"``
(:meth:`NetworkConfig.to_dict`), ``"arch"`` (the found.json it trained) and ``"ema"``; when present they
are used: the network is rebuilt from ``"network"`` (settings may repeat it, never contradict it) and
``"arch"`` must be the architecture the caller passes. Auxiliary-head weights are optional both ways.

ONNX export needs the ``onnx`` package (``onnxscript`` for the dynamo exporter, ``onnxruntime`` for the
parity check): ``pip install 'pflnas[export]'``.
"""

from __future__ import annotations

import importlib
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from pflnas.arch.record import Architecture
from pflnas.errors import ArchitectureError, ConfigError, PflnasError
from pflnas.models import NetworkConfig, build_from_config, resolve_network_config
from pflnas.options import DEFAULT_OPSET, EXPORTERS
from pflnas.train.checkpoint import load_checkpoint
from pflnas.utils_io import atomic_write

AUX_PREFIX = "auxiliary_head."
INSTALL_HINT = "pip install 'pflnas[export]'"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# settings that fix the network's shapes; a checkpoint's "network" decides them
_SHAPE_FIELDS = ("dataset", "num_classes", "in_channels", "init_channels", "layers")


# --- checkpoints ------------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The dict of a retrain checkpoint (on the CPU); anything else raises one clear line."""
    state = load_checkpoint(path)
    if not isinstance(state.get("model"), Mapping):
        raise PflnasError(f"checkpoint {path} is not a pflnas retrain checkpoint (no 'model' state dict)")
    return state


def checkpoint_network_config(
    arch: Architecture,
    checkpoint: Mapping[str, Any] | None,
    *,
    dataset: str | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    init_channels: int | None = None,
    layers: int | None = None,
    auxiliary: bool = False,
    drop_path: float = 0.0,
    origin: str = "the checkpoint",
) -> NetworkConfig:
    """The network config for ``arch``: the checkpoint's ``"network"`` if it has one, else the settings.

    ``None`` settings mean "the checkpoint's, or the default". Settings that contradict the checkpoint's
    network raise :class:`ConfigError`; ``auxiliary`` and ``drop_path`` are always the caller's.
    """
    requested = dict(
        dataset=dataset,
        num_classes=num_classes,
        in_channels=in_channels,
        init_channels=init_channels,
        layers=layers,
    )
    stored = None if checkpoint is None else checkpoint.get("network")
    if stored is not None:
        try:
            saved = NetworkConfig(**stored)
        except TypeError:
            raise PflnasError(f"{origin} has a malformed 'network' entry: {stored!r}") from None
        conflicts = [
            f"{k}={v!r} (the checkpoint has {getattr(saved, k)!r})"
            for k, v in requested.items()
            if v is not None and v != getattr(saved, k)
        ]
        if conflicts:
            raise ConfigError(
                f"{'; '.join(conflicts)} contradicts the network stored in {origin}; leave it out"
            )
        requested = {k: getattr(saved, k) for k in _SHAPE_FIELDS}
    if requested["dataset"] is None:
        requested["dataset"] = "cifar10"
    return resolve_network_config(arch, **requested, auxiliary=auxiliary, drop_path=drop_path)


def check_checkpoint_arch(arch: Architecture, checkpoint: Mapping[str, Any], origin: str) -> None:
    """Raise unless the checkpoint's ``"arch"`` (if it stores one) has the space and the cells (or
    blocks) of ``arch``."""
    stored = checkpoint.get("arch")
    if stored is None:
        return
    mine = arch.to_dict()
    body = "blocks" if arch.space.is_block else "cells"
    if not isinstance(stored, Mapping) or any(stored.get(k) != mine[k] for k in ("space", body)):
        raise ArchitectureError(f"{origin} was trained on another architecture than the one given")


def load_network_state(
    model: nn.Module, state_dict: Mapping[str, Any], origin: str, network: str = "this network"
) -> None:
    """Load ``state_dict`` strictly, except that auxiliary-head weights may be missing or extra.

    A key or shape mismatch raises :class:`ArchitectureError` with one line naming a few of them.
    """
    own = model.state_dict()
    theirs = {k: v for k, v in state_dict.items() if isinstance(v, Tensor)}
    main = {k for k in own if not k.startswith(AUX_PREFIX)}
    given = {k for k in theirs if not k.startswith(AUX_PREFIX)}
    shape = sorted(k for k in main & given if own[k].shape != theirs[k].shape)
    problems = [
        _some("missing", sorted(main - given)),
        _some("unexpected", sorted(given - main)),
        _some("wrong-shape", [f"{k} {list(theirs[k].shape)} vs {list(own[k].shape)}" for k in shape]),
    ]
    problems = [p for p in problems if p]
    if problems:
        raise ArchitectureError(
            f"{origin} does not fit {network} ({'; '.join(problems)}); was it trained with another "
            "architecture, width, depth or class count?"
        )
    usable = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)


def _some(what: str, keys: list[str], shown: int = 2) -> str:
    if not keys:
        return ""
    more = f", ... ({len(keys)} in all)" if len(keys) > shown else ""
    return f"{what} keys: {', '.join(keys[:shown])}{more}"


def load_trained_network(
    arch: Architecture,
    checkpoint: str | Path | None = None,
    *,
    ema: bool = False,
    **settings: Any,
) -> tuple[nn.Module, NetworkConfig]:
    """Build the network of ``arch`` and load a retrain checkpoint's weights into it.

    ``settings`` are those of :func:`checkpoint_network_config`. Without a checkpoint the weights stay
    randomly initialised. ``ema`` loads the checkpoint's EMA weights instead of ``"model"``. The network
    is returned in training mode, like :func:`~pflnas.models.build_network`'s.
    """
    if checkpoint is None:
        if ema:
            raise ConfigError("EMA weights need a checkpoint")
        config = checkpoint_network_config(arch, None, **settings)
        return build_from_config(arch, config), config
    origin = f"checkpoint {checkpoint}"
    state = read_checkpoint(checkpoint)
    check_checkpoint_arch(arch, state, origin)
    config = checkpoint_network_config(arch, state, origin=origin, **settings)
    weights = state["model"]
    if ema:
        if not isinstance(state.get("ema"), Mapping):
            raise PflnasError(f"{origin} holds no EMA weights")
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items()}
    model = build_from_config(arch, config)
    network = (
        f"{type(model).__name__} (C={config.init_channels}, layers={config.layers}, "
        f"{config.num_classes} classes)"
    )
    load_network_state(model, weights, origin, network)
    return model, config


# --- ONNX -------------------------------------------------------------------------------------------
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
