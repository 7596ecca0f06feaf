"""Running scheduled experiment cycles: one at a time, or one per GPU side by side.

Entries start strictly in manifest order. Before each one the dispatcher waits for: the end of
the previous cycle (interleaved/shuffled), free devices, the gap since those devices were last
used, and the thermal floor. Runner calls block on a worker, so they run in threads; everything
else, the manifest and the progress events included, stays on the calling thread, which keeps
the manifest consistent however many experiments run at once.

A StopRequest (set by a signal handler on that thread) is seen within one tick: nothing new
starts, and the runner asks every running worker to clean up and stop (killing it after a
grace period); the dispatcher returns once they have ended. A failed entry that `complete`
says may be retried runs again next, before anything else.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field

from llenergymeasure.config.campaign import Execution
from llenergymeasure.errors import DispatchError, MeasurementError
from llenergymeasure.orchestrator.manifest import ManifestEntry
from llenergymeasure.orchestrator.runners import Job, Outcome, Runner
from llenergymeasure.orchestrator.schedule import effective_gaps, gap_between, needs_barrier
from llenergymeasure.orchestrator.thermal import (
    TemperatureProbe,
    read_gpu_temperatures,
    unpinned_gpus,
)

Device = int | None
"""A GPU index, or None for the single unpinned slot used without --gpus."""

Prepare = Callable[[ManifestEntry, tuple[int, ...] | None, list[str]], Job]
"""Mark the entry running (with its GPUs and warnings), save the manifest, return its Job."""
Complete = Callable[[ManifestEntry, Job, Outcome], bool]
"""Record how the entry ended and save the manifest; True: run it again (a retry)."""


class StopRequest:
    """Set by the first SIGINT/SIGTERM: the campaign stops gracefully."""

    def __init__(self) -> None:
        self.reason: str | None = None
        """The signal's name once a stop was asked for."""
        self.hard_stop_allowed = True
        """A second signal raises KeyboardInterrupt only while experiments are dispatched:
        the manifest and tables are always written whole after that."""


class WaitEvents:
    """What the dispatcher reports while it holds an experiment back."""

    def waiting(self, entry: ManifestEntry, reason: str, remaining_s: float) -> None:
        """Called about once a second while `entry` waits (a gap or the thermal floor)."""

    def notice(self, message: str) -> None:
        """Something the user should know about the whole run."""


@dataclass
class _DeviceState:
    free_since: float = -math.inf
    last: ManifestEntry | None = None
    busy: bool = False


@dataclass(frozen=True)
class _Running:
    entry: ManifestEntry
    job: Job
    devices: tuple[Device, ...]


@dataclass(frozen=True)
class _Wait:
    reason: str | None = None
    """Shown with a countdown; None: just waiting for a running experiment to finish."""
    until: float | None = None


@dataclass
class _FloorWait:
    started: float
    next_probe: float = -math.inf
    reading: dict[int, float] = field(default_factory=dict)


@dataclass
class Dispatcher:
    execution: Execution
    runner: Runner
    executor: Executor
    prepare: Prepare
    complete: Complete
    events: WaitEvents
    gpus: tuple[int, ...] | None = None
    needs: Mapping[str, int] = field(default_factory=dict)
    """GPUs per experiment id (1 where absent); only used with `gpus`."""
    probe: TemperatureProbe = read_gpu_temperatures
    stop: StopRequest = field(default_factory=StopRequest)
    stop_grace_s: float = 60.0
    """How long running workers get to clean up after a stop request before being killed."""
    tick_s: float = 1.0
    thermal_poll_s: float = 5.0

    def __post_init__(self) -> None:
        devices: list[Device] = list(self.gpus) if self.gpus else [None]
        self._devices = {d: _DeviceState() for d in devices}
        self._gaps = effective_gaps(self.execution.gaps, self.runner.fresh_container_per_run)
        self._last_started: ManifestEntry | None = None
        self._floor: _FloorWait | None = None
        self._floor_unchecked: str | None = None

    def run(self, entries: Sequence[ManifestEntry]) -> None:
        """Run every entry; returns when all have ended, or, after a stop request, when those
        running have. A second signal's KeyboardInterrupt propagates at once (the runner's
        __exit__ stops what is still running)."""
        queue = deque(entries)
        running: dict[Future[Outcome], _Running] = {}
        stopping = False
        if queue and self.execution.thermal_floor_c is not None:
            self._check_floor_readable()
        while queue or running:
            if self.stop.reason is not None and not stopping:
                stopping = True
                queue.clear()  # what has not started keeps its status
                if running:
                    self.events.notice(
                        f"{self.stop.reason}: stopping. The running experiment(s) clean up and "
                        f"end (killed after {self.stop_grace_s:g} s); nothing new starts. Press "
                        "Ctrl+C again to stop at once."
                    )
                    self.runner.interrupt(self.stop_grace_s)
                continue
            step = self._next_step(queue[0], bool(running)) if queue else _Wait()
            if isinstance(step, tuple):
                self._start(queue.popleft(), step, running)
                continue
            timeout = self.tick_s  # a stop request is seen within a tick
            if step.until is not None:
                remaining = step.until - time.monotonic()
                if step.reason is not None:
                    self.events.waiting(queue[0], step.reason, max(remaining, 0.0))
                timeout = max(0.0, min(self.tick_s, remaining))
            if running:
                done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    finished = running.pop(future)
                    if self._finish(finished, future.result()) and not stopping:
                        queue.appendleft(finished.entry)
            elif step.until is not None:
                time.sleep(timeout)
            else:  # nothing runs and nothing will free a device: a scheduling bug
                raise DispatchError(f"cannot start {queue[0].key}: no devices can be freed")

    def _next_step(self, entry: ManifestEntry, busy: bool) -> tuple[Device, ...] | _Wait:
        """The devices to start `entry` on now, or what it waits for."""
        if busy and needs_barrier(self._last_started, entry, self.execution.order):
            return _Wait()
        need = self.needs.get(entry.experiment_id, 1) if self.gpus else 1
        free = sorted(
            (d for d, s in self._devices.items() if not s.busy),
            key=lambda d: self._devices[d].free_since,
        )
        if len(free) < need:
            return _Wait()
        devices = tuple(free[:need])
        now = time.monotonic()
        ready_at, reason = now, ""
        for device in devices:
            state = self._devices[device]
            gap = gap_between(state.last, entry, self.execution.order, self._gaps)
            if state.free_since + gap.seconds > ready_at:
                ready_at, reason = state.free_since + gap.seconds, gap.reason
        if ready_at > now:
            return _Wait(f"{reason} gap", ready_at)
        return self._thermal_floor(devices, now) or devices

    def _thermal_floor(self, devices: tuple[Device, ...], now: float) -> _Wait | None:
        """Wait (bounded) until the devices are at or below thermal_floor_c."""
        floor_c = self.execution.thermal_floor_c
        if floor_c is None or self._floor_unchecked is not None:
            return None
        wait_state = self._floor = self._floor or _FloorWait(started=now)
        if now >= wait_state.next_probe:
            try:
                wait_state.reading = self.probe(_gpu_ids(devices))
            except MeasurementError as e:
                self._cannot_check(e)
                return None
            wait_state.next_probe = now + self.thermal_poll_s
        hot = _too_hot(wait_state.reading, floor_c)
        deadline = wait_state.started + self.execution.thermal_floor_max_wait_s
        if not hot or now >= deadline:
            return None
        return _Wait(f"thermal floor {floor_c:g} °C ({hot})", min(deadline, wait_state.next_probe))

    def _floor_warnings(self) -> list[str]:
        """The warnings of an entry about to start, and the floor wait reset for the next."""
        floor_c = self.execution.thermal_floor_c
        wait_state, self._floor = self._floor, None
        if floor_c is None:
            return []
        if self._floor_unchecked is not None:
            return [f"thermal floor {floor_c:g} °C not checked: {self._floor_unchecked}"]
        hot = _too_hot(wait_state.reading if wait_state else {}, floor_c)
        if not hot:
            return []
        wait_s = self.execution.thermal_floor_max_wait_s
        return [
            f"thermal floor {floor_c:g} °C not reached within {wait_s:g} s ({hot}); started anyway"
        ]

    def _check_floor_readable(self) -> None:
        try:
            self.probe(_gpu_ids(tuple(self._devices)))
        except MeasurementError as e:
            self._cannot_check(e)

    def _cannot_check(self, error: MeasurementError) -> None:
        """Say once that the floor cannot be checked; every later run records it."""
        self._floor_unchecked = f"GPU temperature cannot be read ({error})"
        self.events.notice(
            f"thermal_floor_c is {self.execution.thermal_floor_c:g} °C but "
            f"{self._floor_unchecked}: the floor cannot be checked, experiments start "
            "without waiting for it (each result records this)"
        )

    def _start(
        self,
        entry: ManifestEntry,
        devices: tuple[Device, ...],
        running: dict[Future[Outcome], _Running],
    ) -> None:
        pinned = tuple(sorted(d for d in devices if d is not None)) or None
        job = self.prepare(entry, pinned, self._floor_warnings())
        for device in devices:
            self._devices[device].busy = True
        self._last_started = entry
        running[self.executor.submit(self.runner.run, job)] = _Running(entry, job, devices)

    def _finish(self, done: _Running, outcome: Outcome) -> bool:
        """Free the entry's devices; True if it should run again."""
        again = self.complete(done.entry, done.job, outcome)
        now = time.monotonic()  # after `complete` stamped finished_at: gaps count from there
        for device in done.devices:
            state = self._devices[device]
            state.busy, state.free_since, state.last = False, now, done.entry
        return again


def _too_hot(reading: dict[int, float], floor_c: float) -> str:
    """'GPU 0 at 62 °C, GPU 3 at 55 °C' for the GPUs above the floor; '' when none is."""
    return ", ".join(f"GPU {i} at {t:.0f} °C" for i, t in sorted(reading.items()) if t > floor_c)


def _gpu_ids(devices: tuple[Device, ...]) -> tuple[int, ...]:
    pinned = tuple(d for d in devices if d is not None)
    return pinned or unpinned_gpus()
