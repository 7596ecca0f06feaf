"""Background sampler: power, temperature, utilisation, memory, SM clock and throttle reasons.

At most 50 Hz (default 10 Hz: NVML's power fields update about every 100 ms, so faster gains
little, and every call goes through the driver). Never reads the energy counter (~4 ms a call).
A failing read becomes a warning; it never costs the experiment its result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from llenergymeasure.measure.nvml import GpuReader, GpuSample


@dataclass(frozen=True)
class SampleRow:
    gpu_index: int
    uuid: str
    t_s: float
    phase: str
    sample: GpuSample


class Sampler:
    """Samples every reader at `hz` in a daemon thread between __enter__ and __exit__."""

    def __init__(
        self,
        readers: Sequence[GpuReader],
        hz: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < hz <= 50:
            raise ValueError(f"sampler rate must be in (0, 50] Hz, got {hz}")
        self.readers, self.period_s, self.clock = list(readers), 1.0 / hz, clock
        self.phase = "warmup"
        self.rows: list[SampleRow] = []
        self.errors: list[str] = []
        self.busy_s: dict[str, float] = {}
        """Seconds the thread spent reading NVML, per phase: its share of the host's time."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lem-sampler", daemon=True)
        self.stopped_cleanly = True

    def _loop(self) -> None:
        next_t = self.clock()
        while not self._stop.is_set():
            started, phase = self.clock(), self.phase
            for index, reader in enumerate(self.readers):
                try:
                    sample = reader.sample()
                except Exception as e:  # a driver hiccup must not kill the experiment
                    if len(self.errors) < 10:
                        self.errors.append(f"{type(e).__name__}: {e}")
                    continue
                self.rows.append(SampleRow(index, reader.uuid, self.clock(), self.phase, sample))
            self.busy_s[phase] = self.busy_s.get(phase, 0.0) + self.clock() - started
            next_t += self.period_s
            self._stop.wait(max(0.0, next_t - self.clock()))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=max(2.0, 5 * self.period_s))
        self.stopped_cleanly = not self._thread.is_alive()

    def series(self, uuid: str, field: str) -> list[tuple[float, float]]:
        """(t, value) of one field of one GPU, skipping samples where it was unavailable."""
        out = []
        for row in self.rows:
            value = getattr(row.sample, field)
            if row.uuid == uuid and value is not None:
                out.append((row.t_s, float(value)))
        return out

    def warnings(self) -> list[str]:
        notes = []
        if self.errors:
            notes.append(f"sampler read errors ({len(self.errors)}+): {self.errors[0]}")
        if not self.stopped_cleanly:
            notes.append("sampler thread did not stop within its timeout")
        return notes

    def write_parquet(self, path: Path, window_start_s: float) -> None:
        """timeseries.parquet: one row per GPU per sample; t_s is seconds from window start
        (negative during warm-up); units are in the column names."""
        import pandas as pd

        records = []
        for row in self.rows:
            record = {
                "t_s": row.t_s - window_start_s,
                "phase": row.phase,
                "gpu_index": row.gpu_index,
                "gpu_uuid": row.uuid,
            }
            record |= asdict(row.sample)
            records.append(record)
        columns = ["t_s", "phase", "gpu_index", "gpu_uuid", *GpuSample.__dataclass_fields__]
        frame = pd.DataFrame.from_records(records, columns=columns)
        # power_w: the best power reading per sample (instant where the GPU reports it).
        frame.insert(4, "power_w", frame["power_instant_w"].fillna(frame["power_avg_w"]))
        frame.to_parquet(path, index=False)
