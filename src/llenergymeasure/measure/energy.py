"""Energy over the measured window, per GPU.

Primary source: NVML's total-energy counter, read at both window edges. The counter ticks about
every 100 ms, so each edge reads until the value changes (bounded wait): the window then starts
and ends on a tick, and the edge error is one read (~4 ms), not up to a whole update period.
Fallback where the counter is unsupported or went backwards (driver reload): trapezoidal
integration of the sampler's power readings, said so in `energy_method`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llenergymeasure.measure.nvml import GpuReader

COUNTER = "nvml_energy_counter"
INTEGRATED_INSTANT = "integrated_instant_power"
INTEGRATED_AVERAGE = "integrated_average_power"

NO_ENERGY_WARNING = (
    "no energy source available on this device: energy figures are null, not zero "
    "(GPU energy needs an NVIDIA GPU with NVML)"
)


@dataclass(frozen=True)
class CounterRead:
    t_s: float
    energy_mj: int
    synced: bool
    gap_s: float = 0.0
    """Time since the previous read: the tick happened somewhere inside this gap."""
    power_log: tuple[tuple[float, float], ...] = ()
    """(t, instant W) read while waiting for the tick (log_power=True): the end edge uses it to
    remove the energy spent between the window's end and the tick."""


@dataclass(frozen=True)
class GpuEnergy:
    uuid: str
    energy_j: float | None
    method: str | None
    window_s: float
    edge_synced: bool
    edge_uncertainty_s: float | None = None
    counter_supported: bool = True


def read_synced(
    readers: Sequence[GpuReader],
    clock: Callable[[], float] = time.monotonic,
    max_wait_s: float = 0.3,
    log_power: bool = False,
) -> dict[str, CounterRead]:
    """Read each GPU's counter until it ticks; GPUs without a counter are left out.

    Returns the first value after the change and the time it was seen, per GPU. A GPU whose
    counter does not change within max_wait_s is returned with synced=False. With log_power,
    instant power (a ~3 µs call) is read beside each counter read."""
    first: dict[str, int] = {}
    last_t: dict[str, float] = {}
    logs: dict[str, list[tuple[float, float]]] = {r.uuid: [] for r in readers}

    def note_power(reader: GpuReader) -> None:
        if log_power:
            power = reader.power_instant_w()
            if power is not None:
                logs[reader.uuid].append((clock(), power))

    for reader in readers:
        note_power(reader)
        value = reader.energy_mj()
        if value is not None:
            first[reader.uuid], last_t[reader.uuid] = value, clock()
    reads: dict[str, CounterRead] = {}
    deadline = clock() + max_wait_s
    pending = [r for r in readers if r.uuid in first]
    while pending:
        timed_out = clock() >= deadline
        for reader in list(pending):
            note_power(reader)
            value = reader.energy_mj()
            now = clock()
            if value is None:
                pending.remove(reader)
            elif value != first[reader.uuid] or timed_out:
                synced = value != first[reader.uuid]
                gap = now - last_t[reader.uuid]
                log = tuple(logs[reader.uuid])
                reads[reader.uuid] = CounterRead(now, value, synced, gap, log)
                pending.remove(reader)
            else:
                last_t[reader.uuid] = now
    return reads


def integrate_power(samples: Sequence[tuple[float, float]], t0: float, t1: float) -> float | None:
    """Trapezoidal energy (J) of (time s, power W) samples over [t0, t1], with the power at the
    edges interpolated (or held from the nearest sample). None if there are fewer than 2."""
    points = sorted(samples)
    if len(points) < 2 or t1 <= t0:
        return None

    def power_at(t: float) -> float:
        if t <= points[0][0]:
            return points[0][1]
        if t >= points[-1][0]:
            return points[-1][1]
        for (ta, pa), (tb, pb) in itertools.pairwise(points):
            if ta <= t <= tb:
                return pa if tb == ta else pa + (pb - pa) * (t - ta) / (tb - ta)
        raise AssertionError("unreachable: t within sample range")

    inner = [(t, p) for t, p in points if t0 < t < t1]
    curve = [(t0, power_at(t0)), *inner, (t1, power_at(t1))]
    return sum((tb - ta) * (pa + pb) / 2 for (ta, pa), (tb, pb) in itertools.pairwise(curve))


def _tail_energy(end: CounterRead, t_end: float) -> float | None:
    """Energy between the window's end and the end tick, from instant power read meanwhile."""
    log = [(t, p) for t, p in end.power_log if t <= end.t_s]
    if not log or end.t_s <= t_end:
        return None
    if len(log) == 1:
        return log[0][1] * (end.t_s - t_end)
    return integrate_power(log, t_end, end.t_s)


def window_energy(
    uuid: str,
    start: CounterRead | None,
    end: CounterRead | None,
    t_start: float,
    t_end: float,
    instant: Sequence[tuple[float, float]],
    average: Sequence[tuple[float, float]],
    warnings: list[str],
) -> GpuEnergy:
    """One GPU's window energy: the counter if it worked, else power integration.

    The counter window runs from the start tick (just before t_start) to the end tick (up to
    ~100 ms after t_end). Where the end read logged instant power, the energy of that tail is
    integrated and removed, so the window ends at t_end; otherwise it ends at the tick."""
    if start is not None and end is not None and not (start.synced or end.synced):
        warnings.append(
            f"{uuid}: the energy counter did not tick at either window edge (stuck counter?); "
            "energy integrated from power samples instead"
        )
    elif start is not None and end is not None:
        if end.energy_mj >= start.energy_mj:
            energy_j = (end.energy_mj - start.energy_mj) / 1000.0
            window_end = end.t_s
            # Only a synced end read marks a tick, i.e. energy counted up to end.t_s.
            tail_j = _tail_energy(end, t_end) if end.synced else None
            if tail_j is not None:
                energy_j, window_end = energy_j - tail_j, t_end
            return GpuEnergy(
                uuid=uuid,
                energy_j=energy_j,
                method=COUNTER,
                window_s=window_end - start.t_s,
                edge_synced=start.synced and end.synced,
                edge_uncertainty_s=start.gap_s + end.gap_s,
            )
        warnings.append(
            f"{uuid}: the energy counter went backwards during the window (driver reload?); "
            "energy integrated from power samples instead"
        )
    else:
        warnings.append(
            f"{uuid}: the NVML energy counter is not supported; energy integrated from "
            "power samples (less accurate: the counter is the primary source)"
        )
    supported = start is not None and end is not None
    for method, series in ((INTEGRATED_INSTANT, instant), (INTEGRATED_AVERAGE, average)):
        energy = integrate_power(series, t_start, t_end)
        if energy is not None:
            return GpuEnergy(uuid, energy, method, t_end - t_start, False, None, supported)
    warnings.append(f"{uuid}: too few power samples to integrate; energy unknown")
    return GpuEnergy(uuid, None, None, t_end - t_start, False, None, supported)
