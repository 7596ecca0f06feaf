"""Energy-counter series for server levels, whose window is only known after the level.

A thread reads every GPU's total-energy counter every `period_s` (4 Hz: each read costs ~4 ms).
Window energy is the summed counter interpolated linearly at the window's edges (error under one
period's share at each edge); the per-interval powers feed the per-request attribution.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType

import numpy as np

from llenergymeasure.measure.nvml import GpuReader


class CounterSeries:
    def __init__(
        self,
        readers: Sequence[GpuReader],
        period_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.readers, self.period_s, self.clock = list(readers), period_s, clock
        self.points: list[tuple[float, float]] = []
        """(t on the clock, summed counter J)."""
        self._stop = threading.Event()
        self._sleep = sleep
        self._thread = threading.Thread(target=self._loop, name="lem-counter", daemon=True)

    def read_once(self) -> None:
        total = 0.0
        for r in self.readers:
            mj = r.energy_mj()
            if mj is None:
                return
            total += mj / 1000.0
        self.points.append((self.clock(), total))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.read_once()
            if self._sleep is not None:
                self._sleep(self.period_s)
            else:
                self._stop.wait(self.period_s)

    def __enter__(self) -> CounterSeries:
        if self.readers:
            self.read_once()  # a point before anything the caller times from now
            self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self.readers:
            self.read_once()

    def energy_j(self, start: float, end: float) -> float | None:
        """Counter energy over [start, end]; waits (up to two periods) for a read past `end`,
        so a window that ends just now is still covered. None when no reads cover it."""
        deadline = time.monotonic() + 2 * self.period_s
        while (
            self._thread.is_alive()
            and (not self.points or self.points[-1][0] < end)
            and time.monotonic() < deadline
        ):
            time.sleep(self.period_s / 10)
        if len(self.points) < 2 or start < self.points[0][0] or end > self.points[-1][0]:
            return None
        return interp(self.points, end) - interp(self.points, start)

    def power_w(self, offset: float = 0.0) -> list[tuple[float, float]]:
        """Mean power of each interval, placed at its midpoint, times shifted by -offset."""
        return [
            ((a + b) / 2 - offset, (eb - ea) / (b - a))
            for (a, ea), (b, eb) in zip(self.points, self.points[1:], strict=False)
            if b > a
        ]


def interp(points: Sequence[tuple[float, float]], t: float) -> float:
    """The series' value at t, linear between points, held flat beyond them (0 when empty)."""
    if not points:
        return 0.0
    xs, ys = zip(*points, strict=True)
    return float(np.interp(t, xs, ys))
