"""Device selection and reproducibility switches."""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Iterator

import numpy as np
import torch

from pflnas.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type != "cpu":
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(device: torch.device, deterministic: bool | None) -> None:
    """Deterministic kernels where they are cheap (CPU); cuDNN autotuning on GPU unless asked otherwise."""
    if deterministic is None:
        deterministic = device.type == "cpu"
    if device.type == "cpu":
        torch.use_deterministic_algorithms(deterministic)
    else:
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def rng_state() -> dict:
    """All global RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def memory_guard(what: str, fix: str) -> Iterator[None]:
    """Turn an allocation failure while building ``what`` (a network far too wide for this machine) into
    one ConfigError line saying ``fix``, instead of an allocator traceback."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise ConfigError(f"{what} does not fit in the device's memory; {fix}") from None
    except RuntimeError as exc:
        text = str(exc)
        if "can't allocate memory" not in text and "out of memory" not in text:
            raise
        raise ConfigError(f"{what} does not fit in memory ({_bytes_asked(text)}); {fix}") from None


def _bytes_asked(text: str) -> str:
    m = re.search(r"allocate (\d+) bytes", text)
    return f"it asked for {int(m.group(1)) / 2**30:.1f} GiB" if m else "allocation failed"
