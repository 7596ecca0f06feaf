"""Idle baseline: mean GPU power while nothing runs, to subtract from the window's energy.

Idle power depends on the GPU's state (an H100 read ~72 W before any CUDA context existed and
~107 W with one), so the baseline is always taken in one stated state, BASELINE_STATE: in the
worker, after the model is loaded (context alive, weights resident), before warm-up. Each
experiment runs in a fresh process, so the cache lives in a file per GPU in the campaign's
cache directory, valid for a TTL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.measure.energy import read_synced
from llenergymeasure.measure.nvml import GpuReader

BASELINE_STATE = "model_loaded_idle"


@dataclass(frozen=True)
class Baseline:
    uuid: str
    power_w: float
    method: str  # "energy_counter" or "instant_power_mean"
    duration_s: float
    measured_at_unix_s: float
    state: str = BASELINE_STATE


def measure_baseline(
    readers: Sequence[GpuReader],
    duration_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    wall_clock: Callable[[], float] = time.time,
) -> dict[str, Baseline]:
    """Mean idle power per GPU over duration_s: counter delta / time where the counter works
    (exact mean, edges synced), else the mean of instant-power readings at 10 Hz."""
    start = read_synced(readers, clock)
    samples: dict[str, list[float]] = {r.uuid: [] for r in readers}
    t_end = clock() + duration_s
    while clock() < t_end:
        for reader in readers:
            if reader.uuid not in start:
                power = reader.power_instant_w()
                if power is not None:
                    samples[reader.uuid].append(power)
        sleep(min(0.1, max(0.0, t_end - clock())))
    end = read_synced(readers, clock)
    now = wall_clock()
    out: dict[str, Baseline] = {}
    for reader in readers:
        a, b = start.get(reader.uuid), end.get(reader.uuid)
        ticked = a is not None and b is not None and (a.synced or b.synced)
        if ticked and a and b and b.energy_mj >= a.energy_mj and b.t_s > a.t_s:
            power = (b.energy_mj - a.energy_mj) / 1000.0 / (b.t_s - a.t_s)
            out[reader.uuid] = Baseline(reader.uuid, power, "energy_counter", b.t_s - a.t_s, now)
        elif samples[reader.uuid]:
            values = samples[reader.uuid]
            out[reader.uuid] = Baseline(
                reader.uuid, sum(values) / len(values), "instant_power_mean", duration_s, now
            )
    return out


class BaselineCache:
    """One JSON file per GPU UUID; an entry older than ttl_s is stale."""

    def __init__(self, directory: Path, ttl_s: float) -> None:
        self.directory, self.ttl_s = directory, ttl_s

    def _path(self, uuid: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in uuid)
        return self.directory / f"baseline-{safe}.json"

    def get(self, uuid: str) -> Baseline | None:
        """The cached baseline, fresh or not (the caller checks age_s against ttl_s)."""
        try:
            data = json.loads(self._path(uuid).read_text(encoding="utf-8"))
            baseline = Baseline(**data)
        except (OSError, ValueError, TypeError):
            return None
        numbers = (baseline.power_w, baseline.duration_s, baseline.measured_at_unix_s)
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in numbers):
            return None
        return baseline

    def put(self, baseline: Baseline) -> None:
        write_text_atomic(self._path(baseline.uuid), json.dumps(asdict(baseline), indent=1))

    def is_fresh(self, baseline: Baseline, now_unix_s: float) -> bool:
        return 0 <= now_unix_s - baseline.measured_at_unix_s <= self.ttl_s
