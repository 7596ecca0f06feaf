"""Scripted stand-ins for NVML, for driving the measurement layer with known power traces.

FakeClock keeps time in integer microseconds, so tick boundaries are decided exactly. A
ScriptedGpu implements the GpuReader protocol: its total-energy counter is the exact integral of
a piecewise-linear power trace, in whole millijoules, updated at ticks every `tick_s` (100 ms by
default, as on an H100), and each energy_mj() call costs `energy_cost_s` of clock time (4 ms, as
measured on an H100); instant power costs nothing by default. The value a read returns is the
counter at the END of the call, so the tick a read sees happened inside (previous read's end,
this read's end]: the gap read_synced reports.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from llenergymeasure.measure.nvml import GpuSample

US = 1_000_000


class FakeClock:
    """A monotonic clock that only moves when told to (by a reader's call cost or a sleep)."""

    def __init__(self, start_s: float) -> None:
        self.t_us = round(start_s * US)
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t_us / US

    def exact(self) -> Fraction:
        return Fraction(self.t_us, US)

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.t_us += round(seconds * US)

    def sleep(self, seconds: float) -> None:
        """Like time.sleep, but a positive sleep always moves the clock (at least 1 µs), so a
        loop waiting for a float deadline cannot spin on a rounding remainder."""
        self.sleeps.append(seconds)
        if seconds > 0:
            self.t_us += max(1, round(seconds * US))


def q(value: float | str) -> Fraction:
    """Exact decimal: q('107.3') == Fraction(1073, 10)."""
    return Fraction(str(value))


@dataclass
class Trace:
    """Piecewise-linear board power, W, through (time s, power W) points; constant before the
    first point and after the last. Two points at one time make a step."""

    points: Sequence[tuple[float | str, float | str]]

    def __post_init__(self) -> None:
        self._pts = [(q(t), q(p)) for t, p in self.points]
        assert self._pts == sorted(self._pts, key=lambda tp: tp[0])

    def power(self, t: Fraction) -> Fraction:
        pts = self._pts
        if t <= pts[0][0]:
            return pts[0][1]
        for (ta, pa), (tb, pb) in itertools.pairwise(pts):
            if ta <= t < tb:
                return pa + (pb - pa) * (t - ta) / (tb - ta)
        return pts[-1][1]

    def energy_j(self, t0: Fraction | float | str, t1: Fraction | float | str) -> Fraction:
        """Exact integral of the power over [t0, t1]."""
        a, b = (x if isinstance(x, Fraction) else q(x) for x in (t0, t1))
        assert a <= b
        cuts = sorted({a, b, *(t for t, _ in self._pts if a < t < b)})
        total = Fraction(0)
        for ta, tb in itertools.pairwise(cuts):
            # linear inside each piece: the trapezoid is exact (use the limits inside the piece)
            mid = (ta + tb) / 2
            total += (tb - ta) * self.power(mid)
        return total


def constant(watts: float | str) -> Trace:
    return Trace([(0, watts)])


@dataclass
class ScriptedGpu:
    """A GpuReader with a known power trace on a (fake or real) clock.

    counter=False: energy_mj() is None (unsupported). tick_s=None: the counter never changes.
    reset_at_s: the counter restarts from 0 at that time (a driver reload).
    """

    uuid: str
    clock: Callable[[], float]
    trace: Trace
    tick_s: float | None = 0.1
    tick_phase_s: float = 0.0
    energy_cost_s: float = 0.004
    instant_cost_s: float = 0.0  # ~3 µs on an H100: left out so edges stay on a 4 ms grid
    offset_mj: int = 7_000_000_000
    counter: bool = True
    instant: bool = True
    average: bool = True
    reset_at_s: float | None = None
    throttle_reasons: int | None = 0
    temperature_c: float | None = 40.0
    gpu_util_pct: float | None = 50.0
    fail_sample: bool = False
    pids: list[set[int] | None] = field(default_factory=list)
    """compute_pids() answers, one per call in order (the last repeats); none: no processes."""
    energy_calls: int = 0
    sample_calls: int = 0
    energy_reads: list[tuple[float, int]] = field(default_factory=list)

    def _now(self) -> Fraction:
        exact = getattr(self.clock, "exact", None)
        return exact() if exact is not None else Fraction(self.clock())

    def _cost(self, seconds: float) -> None:
        advance = getattr(self.clock, "advance", None)
        if advance is not None:
            advance(seconds)

    def last_tick(self, t: Fraction) -> Fraction:
        """Time of the latest counter update at or before t."""
        assert self.tick_s is not None
        tick, phase = q(self.tick_s), q(self.tick_phase_s)
        return phase + tick * math.floor((t - phase) / tick)

    def counter_mj(self, tick_t: Fraction) -> int:
        """The counter's value as published at tick time tick_t."""
        if self.reset_at_s is not None and tick_t >= q(self.reset_at_s):
            return math.floor(1000 * self.trace.energy_j(q(self.reset_at_s), tick_t))
        return self.offset_mj + math.floor(1000 * self.trace.energy_j(0, tick_t))

    def energy_mj(self) -> int | None:
        self.energy_calls += 1
        if not self.counter:
            return None
        self._cost(self.energy_cost_s)
        now = self._now()
        value = self.counter_mj(self.last_tick(now) if self.tick_s is not None else Fraction(0))
        self.energy_reads.append((float(now), value))
        return value

    def power_instant_w(self) -> float | None:
        self._cost(self.instant_cost_s)
        return float(self.trace.power(self._now())) if self.instant else None

    def compute_pids(self) -> set[int] | None:
        if not self.pids:
            return set()
        return self.pids.pop(0) if len(self.pids) > 1 else self.pids[0]

    def sample(self) -> GpuSample:
        self.sample_calls += 1
        if self.fail_sample:
            raise RuntimeError("NVML_ERROR_UNKNOWN (scripted)")
        power = float(self.trace.power(self._now()))
        return GpuSample(
            power_avg_w=power if self.average else None,
            power_instant_w=power if self.instant else None,
            temperature_c=self.temperature_c,
            gpu_util_pct=self.gpu_util_pct,
            mem_util_pct=10.0,
            memory_used_mb=1024.0,
            sm_clock_mhz=1980.0,
            throttle_reasons=self.throttle_reasons,
        )


def wait_for_samples(gpu: ScriptedGpu, more: int = 2, within_s: float = 120.0) -> None:
    """Block until the real sampler thread has started `more` further samples of gpu (with 2,
    at least one read wholly after whatever the test just changed): tests wait for samples
    rather than sleep a guess, which a loaded machine may not honour (issue 28.8)."""
    target = gpu.sample_calls + more
    deadline = time.monotonic() + within_s
    while gpu.sample_calls < target:
        assert time.monotonic() < deadline, f"{gpu.sample_calls} samples, not {target}"
        time.sleep(0.002)
