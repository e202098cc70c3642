"""The timing core of :mod:`pflnas.measure.timing` on a fake clock: warm-up calls untimed, one time per
repeat, each call in its own mode context, the GC paused only while timing, and the summary statistics."""

import contextlib
import gc
from types import SimpleNamespace

import pytest
import torch

import pflnas.measure.timing as timing
from pflnas.measure.context import MeasurementContext, SpeedConfig
from pflnas.measure.timing import TimingStats, time_calls

CPU = torch.device("cpu")


class FakeClock:
    """A nanosecond clock that moves only when the timed function says how long it took."""

    def __init__(self) -> None:
        self.now = 0

    def perf_counter_ns(self) -> int:
        return self.now

    def spend(self, ms: float) -> None:
        self.now += int(ms * 1e6)


def context(batch_size: int = 4) -> MeasurementContext:
    return MeasurementContext("cpu", "test CPU", 1, "0", "float32", "contiguous", batch_size, 0, 1, "fake")


def test_warmup_is_untimed_and_each_repeat_is_timed_in_its_own_mode(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter_ns=clock.perf_counter_ns))
    durations = iter([9.0, 9.0, 1.0, 4.0, 2.0, 3.0])  # two warm-up calls, then four timed ones
    events, gc_on = [], []

    @contextlib.contextmanager
    def mode():
        events.append("enter")
        yield
        events.append("exit")

    def fn():
        events.append("call")
        gc_on.append(gc.isenabled())
        clock.spend(next(durations))

    assert gc.isenabled()
    times = time_calls(fn, SpeedConfig(warmup=2, repeats=4, threads=1), CPU, mode)
    assert times == [1.0, 4.0, 2.0, 3.0]
    assert events == ["enter", "call", "exit"] * 6
    assert gc_on == [True, True, False, False, False, False]
    assert gc.isenabled()


def test_summary_statistics_of_known_times():
    stats = TimingStats((1.0, 4.0, 2.0, 3.0), context(batch_size=4))
    assert stats.median == pytest.approx(2.5)
    assert stats.iqr == pytest.approx(1.5)  # p75 3.25 - p25 1.75 (linear interpolation)
    assert (stats.min, stats.max) == (1.0, 4.0)
    assert stats.throughput == pytest.approx(4 / 2.5e-3)
    assert stats.to_dict(include_times=False)["median_ms"] == pytest.approx(2.5)
    with pytest.raises(ValueError):
        TimingStats((), context())
