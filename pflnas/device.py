"""Device selection, reproducibility switches and the memory guard.

Search, retrain, profile and the op benchmark all pick a device and check that a network fits before they
build it; this sits below all of them so none has to import another for it.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import re
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from pflnas.errors import ConfigError, PflnasError


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


def build_within_memory(
    build: Callable[[], nn.Module], device: torch.device, what: str, fix: str, *, copies: int = 1
) -> nn.Module:
    """``build()`` moved to ``device``, refused with one ConfigError line saying ``fix`` when it cannot fit.

    The network is first built on the meta device (no memory), and its weights times ``copies`` (training
    keeps gradients and optimizer state too: 3) are checked against ``device``, and once against RAM where
    a GPU network is built first. An overcommitting allocator would otherwise hand the memory out and the
    kernel kill the process later; an allocation that fails anyway is caught by :func:`memory_guard`.
    """
    weights = model_bytes(build)
    if weights is not None:
        state = "its weights" + " and training state" * (copies > 1) + " need"
        check_fits(what, weights * copies, device, fix, state)
        if device.type != "cpu":
            check_fits(what, weights, torch.device("cpu"), fix, "its weights need")
    with memory_guard(what, fix):
        return build().to(device)


def check_fits(what: str, need: int, device: torch.device, fix: str, needs: str = "it needs") -> None:
    """One ConfigError line when ``need`` bytes exceed the memory free on ``device`` (unknown: no check)."""
    free = free_memory(device)
    if free is not None and need > free:
        raise ConfigError(
            f"{what} does not fit in memory: {needs} {_size(need)}, {device.type} has {_size(free)} free; "
            f"{fix}"
        )


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def model_bytes(build: Callable[[], nn.Module]) -> int | None:
    """Bytes of the parameters and buffers ``build()`` makes, counted on the meta device; None when the
    network cannot be built there (the caller then builds it for real, under :func:`memory_guard`)."""
    try:
        with torch.device("meta"):
            model = build()
    except PflnasError:
        raise
    except Exception:  # code that needs real values (e.g. .item()) while building: no estimate
        return None
    tensors = itertools.chain(model.parameters(), model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device``: a GPU's free memory, or RAM available to this process
    (the smaller of the system's MemAvailable and the room left under a cgroup limit); None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    candidates = [_meminfo_available(), _cgroup_room()]
    known = [c for c in candidates if c is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """The memory left under this process's cgroup limit (v2, else v1); None without a limit."""
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            with open(limit) as fh:
                cap = fh.read().strip()
            with open(usage) as fh:
                used = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 2**60:  # v1 writes a huge number for "no limit"
            return max(0, int(cap) - used)
    return None


def at_least_fp32(t: Tensor) -> Tensor:
    """``t`` in float32 when it is narrower (bf16 logits under autocast), unchanged when float32 or wider
    (a float64 run, as the exactness tests use, keeps its precision in the loss)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()
