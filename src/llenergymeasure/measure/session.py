"""Everything measured around one experiment, in the order the measured window needs it.

    with MeasurementSession(config, cache_dir) as session:   # NVML up, pre-flight checks
        ...load the model...
        session.attach(cuda_devices)                         # GPU facts, idle baseline
        with session.sampling():                             # time series from here on
            ...warm-up...
            with session.window() as window:                 # synced energy edges
                ...serve every prompt, synchronise...
        report = session.report(output_tokens, n_requests)

Where there is no NVIDIA GPU every step still runs and the energy figures come out null with a
warning: a result is never lost for want of a measurement.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from llenergymeasure.config.energy_sources import NVML, missing_extra
from llenergymeasure.config.experiment import MeasurementConfig
from llenergymeasure.errors import ConfigError, MeasurementError
from llenergymeasure.measure import energy as energy_mod
from llenergymeasure.measure.baseline import Baseline, BaselineCache, measure_baseline
from llenergymeasure.measure.environment import driver_versions, gpu_info, preflight_warnings
from llenergymeasure.measure.hoststat import HostUsage, host_usage, usage_between
from llenergymeasure.measure.nvml import (
    POWER_BITS,
    SLOWDOWN_BITS,
    THERMAL_BITS,
    GpuReader,
    NvmlGpu,
    cuda_device_uuids,
    nvml_session,
    visible_gpu_uuids,
)
from llenergymeasure.measure.quality import (
    SHORT_WINDOW_S,
    MeasuredQuality,
    SampledWindow,
    assess,
)
from llenergymeasure.measure.rapl import RaplReader
from llenergymeasure.measure.sampler import Sampler
from llenergymeasure.measure.sources import EnergySource, make_source
from llenergymeasure.results.schema import (
    EnergyFigures,
    GpuEnergyRecord,
    GpuInfo,
    HostEnergy,
    MeasurementFlags,
    QualityRecord,
)


@dataclass
class Window:
    """The measured window's edges on the session clock (and on the wall clock)."""

    start_s: float = 0.0
    end_s: float = 0.0
    start_unix_s: float = 0.0
    end_unix_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class SideWindow:
    """A window after the main one, with its own energy (see MeasurementSession.side_window)."""

    phase: str
    start_s: float = 0.0
    end_s: float = 0.0
    energy_j: float | None = None
    method: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class Report:
    energy: EnergyFigures
    flags: MeasurementFlags
    warnings: list[str]


@dataclass
class _Baselines:
    values: dict[str, Baseline] = field(default_factory=dict)
    source: Literal["measured", "cache"] | None = None
    age_s: float | None = None
    stale: bool = False


class MeasurementSession:
    """Owns NVML, the sampler and the energy edges for one experiment."""

    def __init__(
        self,
        config: MeasurementConfig,
        cache_dir: Path,
        *,
        readers: list[GpuReader] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rapl: RaplReader | None = None,
        source: EnergySource | None = None,
        host: Callable[[], HostUsage] = host_usage,
    ) -> None:
        """readers: inject GPU readings (tests); by default they come from NVML in attach().
        clock, wall_clock and sleep go together: a test's fake clock needs its own sleep.
        source: inject the energy source (tests); by default energy_source's, in attach().
        host: reads steal and this process's CPU time at the window's edges."""
        self.config, self.clock, self.wall_clock = config, clock, wall_clock
        self.host = host
        self._host_edges: tuple[HostUsage | None, HostUsage | None] = (None, None)
        self.sleep = sleep
        # Set by the worker when repeating passes stopped at the time limit before min_window_s.
        self.window_cut_by_time_limit = False
        self.cache = BaselineCache(cache_dir, config.baseline.ttl_s)
        self.readers: list[GpuReader] = list(readers or [])
        self._injected = readers is not None
        self.rapl = rapl if rapl is not None else RaplReader()
        self.warnings: list[str] = []
        self.gpus: list[GpuInfo] = []
        self.driver: tuple[str | None, str | None] = (None, None)
        self.sampler: Sampler | None = None
        self.window_edges = Window()
        self._stack = contextlib.ExitStack()
        self._pynvml: Any = None
        self._processes_before: dict[str, int] = {}
        self._pids_before: dict[str, set[int]] = {}
        self._ours: dict[str, set[int]] = {}
        """Per GPU: the processes that appeared while this worker loaded (its own contexts)."""
        self._window_pids: dict[str, set[int] | None] = {}
        self._baselines = _Baselines()
        self._start_reads: dict[str, energy_mod.CounterRead] = {}
        self._end_reads: dict[str, energy_mod.CounterRead] = {}
        self._host: HostEnergy | None = None
        self.source: EnergySource | None = source
        self._source_j: float | None = None
        self._counter_periods_s: list[float] = []
        self._report: Report | None = None

    def __enter__(self) -> MeasurementSession:
        source = self.config.energy_source
        problem = missing_extra(source) if source else None
        if problem is not None:  # before any model is loaded: a config error, not retried
            raise ConfigError(problem)
        if not self._injected:
            try:
                self._pynvml = self._stack.enter_context(nvml_session())
            except MeasurementError:
                self._pynvml = None
            else:
                self._count_processes_before_load()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _count_processes_before_load(self) -> None:
        """Before this process makes a CUDA context, every compute process is someone else's."""
        pynvml = self._pynvml
        for uuid in visible_gpu_uuids(pynvml):
            with contextlib.suppress(pynvml.NVMLError):
                handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
                procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                self._processes_before[uuid] = len(procs)
                self._pids_before[uuid] = {int(p.pid) for p in procs}

    def attach(self, cuda_devices: list[int] | None, *, baseline: bool = True) -> None:
        """Bind to the GPUs the backend uses, by CUDA device number (None: unknown, use the
        visible ones; []: none), record their state and take the idle baseline (unless the
        caller takes its own: baseline=False). Call after load, before warm-up."""
        if not self._injected and self._pynvml is not None and cuda_devices != []:
            uuids = cuda_device_uuids(self._pynvml, cuda_devices)
            self.readers = [NvmlGpu(self._pynvml, uuid) for uuid in uuids]
            self.gpus = [
                gpu_info(self._pynvml, u).model_copy(
                    update={"compute_processes": self._processes_before.get(u, 0)}
                )
                for u in uuids
            ]
            self.driver = driver_versions(self._pynvml)
            self.warnings.extend(preflight_warnings(self.gpus))
        for reader in self.readers:
            pids = reader.compute_pids()
            self._ours[reader.uuid] = (pids or set()) - self._pids_before.get(reader.uuid, set())
        if self.readers and baseline and self.config.baseline.enabled:
            self._baselines = self._take_baselines()
        if self.readers and self.config.energy_source not in (None, NVML) and self.source is None:
            indices = [g.index for g in self.gpus]
            known = [i for i in indices if i is not None]
            self.source = make_source(
                str(self.config.energy_source),
                known if self.gpus and len(known) == len(indices) else None,
            )

    def _take_baselines(self) -> _Baselines:
        now = self.wall_clock()
        cached = {r.uuid: self.cache.get(r.uuid) for r in self.readers}
        fresh = {u: b for u, b in cached.items() if b is not None and self.cache.is_fresh(b, now)}
        if len(fresh) == len(self.readers):
            age = max(now - b.measured_at_unix_s for b in fresh.values())
            return _Baselines(fresh, "cache", age)
        busy = {g.uuid for g in self.gpus if g.compute_processes}
        measured = measure_baseline(
            self.readers,
            self.config.baseline.duration_s,
            self.clock,
            sleep=self.sleep,
            wall_clock=self.wall_clock,
        )
        out = _Baselines(source="measured", age_s=0.0)
        for reader in self.readers:
            value, old = measured.get(reader.uuid), cached.get(reader.uuid)
            if value is not None and reader.uuid not in busy:
                self.cache.put(value)
                out.values[reader.uuid] = value
            elif old is not None:
                out.values[reader.uuid], out.stale, out.source = old, True, "cache"
                out.age_s = max(out.age_s or 0.0, now - old.measured_at_unix_s)
                self.warnings.append(
                    f"{reader.uuid}: idle baseline could not be re-measured (GPU busy or "
                    f"unreadable); using one {now - old.measured_at_unix_s:.0f} s old"
                )
            elif value is not None:
                out.values[reader.uuid] = value
                self.warnings.append(
                    f"{reader.uuid}: idle baseline measured while other processes used the "
                    "GPU; it overstates idle power"
                )
        if len(out.values) < len(self.readers):
            self.warnings.append("idle baseline unavailable for some GPUs; adjusted energy is null")
        return out

    @contextlib.contextmanager
    def sampling(self) -> Iterator[None]:
        """Run the sampler (phase 'warmup' until the window opens) around warm-up + window."""
        hz = self.config.sampler_hz
        if not self.readers or hz == 0:
            yield
            return
        with Sampler(self.readers, hz, self.clock) as sampler:
            self.sampler = sampler
            yield
        self.warnings.extend(sampler.warnings())

    @contextlib.contextmanager
    def window(self) -> Iterator[Window]:
        """The measured window: energy read at counter ticks on both edges (the caller has
        synchronised the device before entering and synchronises before leaving). The GPUs'
        process lists are read just outside both edges: who else ran on them meanwhile."""
        self._note_window_pids()
        self._start_reads = energy_mod.read_synced(self.readers, self.clock)
        host_start = self.host()
        if self.rapl.available:
            self.rapl.start()
        if self.sampler is not None:
            self.sampler.phase = "measured"
        if self.source is not None:
            self.source.start()
        self.window_edges.start_s = self.clock()
        self.window_edges.start_unix_s = self.wall_clock()
        yield self.window_edges
        self.window_edges.end_s = self.clock()
        self.window_edges.end_unix_s = self.wall_clock()
        self._host_edges = (host_start, self.host())
        if self.source is not None:
            self._source_j = self._stop_source(self.source)
        if self.sampler is not None:
            self.sampler.phase = "cooldown"
        self._host = self.rapl.stop() if self.rapl.available else self.rapl.not_readable()
        self._end_reads = energy_mod.read_synced(self.readers, self.clock, log_power=True)
        self._counter_periods_s = self._observe_counter_period()
        self._note_window_pids()

    def _stop_source(self, source: EnergySource) -> float | None:
        try:
            energy_j = source.stop_j()
        except Exception as e:  # another library's failure must not cost the result
            self.warnings.append(f"energy source {source.name} failed at the window's end: {e}")
            return None
        if energy_j is None:
            self.warnings.append(f"energy source {source.name} gave no GPU energy for the window")
        return energy_j

    def _observe_counter_period(self) -> list[float]:
        """One more tick after the end edge's: the time between them is the counter's update
        period as this GPU shows it (outside the window; costs one period)."""
        ends = self._end_reads
        ticked = [r for r in self.readers if r.uuid in ends and ends[r.uuid].synced]
        after = energy_mod.read_synced(ticked, self.clock)
        return [read.t_s - self._end_reads[uuid].t_s for uuid, read in after.items() if read.synced]

    def _gpu_energies(
        self,
        start: dict[str, energy_mod.CounterRead],
        end: dict[str, energy_mod.CounterRead],
        t0: float,
        t1: float,
        warnings: list[str],
    ) -> list[energy_mod.GpuEnergy]:
        """Each GPU's energy between two edges: counter, else the sampler's power."""
        return [
            energy_mod.window_energy(
                reader.uuid,
                start.get(reader.uuid),
                end.get(reader.uuid),
                t0,
                t1,
                self.sampler.series(reader.uuid, "power_instant_w") if self.sampler else [],
                self.sampler.series(reader.uuid, "power_avg_w") if self.sampler else [],
                warnings,
            )
            for reader in self.readers
        ]

    @contextlib.contextmanager
    def side_window(self, phase: str) -> Iterator[SideWindow]:
        """A second measured window after the main one (the prefill pass of phase_split):
        energy edges synced the same way, sampler rows tagged `phase`; the main window's
        figures are untouched. Energy is null without a GPU or where any GPU's is unknown."""
        side = SideWindow(phase)
        start = energy_mod.read_synced(self.readers, self.clock)
        if self.sampler is not None:
            self.sampler.phase = phase
        side.start_s = self.clock()
        yield side
        side.end_s = self.clock()
        if self.sampler is not None:
            self.sampler.phase = "cooldown"
        end = energy_mod.read_synced(self.readers, self.clock, log_power=True)
        if not self.readers:
            return
        energies = self._gpu_energies(start, end, side.start_s, side.end_s, side.warnings)
        if all(g.energy_j is not None for g in energies):
            side.energy_j = sum(g.energy_j or 0.0 for g in energies)
            side.method = energies[0].method if len({g.method for g in energies}) == 1 else "mixed"

    def _note_window_pids(self) -> None:
        for reader in self.readers:
            pids = reader.compute_pids()
            seen = self._window_pids.get(reader.uuid, set())
            self._window_pids[reader.uuid] = None if pids is None or seen is None else seen | pids

    def _others_in_window(self, warnings: list[str]) -> bool | None:
        """Whether another process used a measured GPU at the window's edges (a warning names
        how many); None when no process list could be read."""
        known = {u: p for u, p in self._window_pids.items() if p is not None}
        if not known:
            return None
        me = {os.getpid()}
        found = False
        for uuid, pids in known.items():
            others = pids - self._ours.get(uuid, set()) - me
            if others:
                found = True
                warnings.append(
                    f"{uuid}: {len(others)} other process(es) used the GPU during the measured "
                    f"window (pid {', '.join(map(str, sorted(others)))}): their energy is "
                    "counted in this result"
                )
        return found

    def sampler_busy_fraction(self) -> float | None:
        if self.sampler is None or self.window_edges.duration_s <= 0:
            return None
        return self.sampler.busy_s.get("measured", 0.0) / self.window_edges.duration_s

    def write_timeseries(self, path: Path) -> bool:
        if self.sampler is None or not self.sampler.rows:
            return False
        self.sampler.write_parquet(path, self.window_edges.start_s)
        return True

    def report(self, output_tokens: int, n_requests: int) -> Report:
        """Energy figures, validity flags and warnings for the finished window."""
        warnings = list(self.warnings)
        flags = self._flags(warnings)
        if not self.readers:
            warnings.append(energy_mod.NO_ENERGY_WARNING)
            self._report = Report(EnergyFigures(**self._host_figures()), flags, warnings)
            return self._report
        edges = self.window_edges
        per_gpu = []
        energies = self._gpu_energies(
            self._start_reads, self._end_reads, edges.start_s, edges.end_s, warnings
        )
        for reader, record in zip(self.readers, energies, strict=True):
            baseline = self._baselines.values.get(reader.uuid)
            per_gpu.append(
                GpuEnergyRecord(
                    uuid=record.uuid,
                    energy_j=record.energy_j,
                    method=record.method,
                    window_s=record.window_s,
                    edge_synced=record.edge_synced,
                    edge_uncertainty_s=record.edge_uncertainty_s,
                    baseline_power_w=baseline.power_w if baseline else None,
                )
            )
        flags.energy_counter_unsupported = not all(
            r.uuid in self._start_reads for r in self.readers
        )
        self._report = Report(self._totals(per_gpu, output_tokens, n_requests), flags, warnings)
        return self._report

    def quality(
        self, *, min_window_s: float, passes: int, latency_ratio: float | None
    ) -> QualityRecord:
        """The window's quality record (call after report()); the worker adds what only it
        knows: the minimum it aimed for, the passes it ran, the warm-up latency ratio."""
        if self._report is None:
            raise MeasurementError("quality() needs report() first")
        energy, flags = self._report.energy, self._report.flags
        rows = [r for r in (self.sampler.rows if self.sampler else []) if r.phase == "measured"]
        sampled = [
            SampledWindow(
                times_s=[r.t_s for r in rows if r.uuid == reader.uuid],
                busy_pct=[r.sample.gpu_util_pct for r in rows if r.uuid == reader.uuid],
                throttled=[
                    None
                    if r.sample.throttle_reasons is None
                    else bool(r.sample.throttle_reasons & SLOWDOWN_BITS)
                    for r in rows
                    if r.uuid == reader.uuid
                ],
            )
            for reader in self.readers
        ]
        baselines = self._baselines
        measured = MeasuredQuality(
            window_start_s=self.window_edges.start_s,
            window_end_s=self.window_edges.end_s,
            per_gpu=energy.per_gpu,
            energy_method=energy.energy_method,
            counter_periods_s=self._counter_periods_s,
            sampler_hz=self.config.sampler_hz if self.sampler is not None else None,
            sampled=sampled if self.sampler is not None else [],
            baseline_expected=bool(self.readers) and self.config.baseline.enabled,
            baseline_source=baselines.source if baselines.values else None,
            baseline_age_s=baselines.age_s if baselines.values else None,
            baseline_state=next(iter(baselines.values.values())).state
            if baselines.values
            else None,
            baseline_stale=baselines.stale if self.readers else None,
            short_window=flags.short_window,
            host=usage_between(*self._host_edges),
        )
        return assess(
            measured, min_window_s=min_window_s, passes=passes, latency_ratio=latency_ratio
        )

    def _totals(
        self, per_gpu: list[GpuEnergyRecord], output_tokens: int, n_requests: int
    ) -> EnergyFigures:
        known = [g for g in per_gpu if g.energy_j is not None]
        if len(known) < len(per_gpu):
            return EnergyFigures(per_gpu=per_gpu, **self._host_figures())
        nvml_j = sum(g.energy_j or 0.0 for g in known)
        methods = {g.method for g in known}
        method = methods.pop() if len(methods) == 1 else "mixed"
        raw: float | None = nvml_j
        if self.source is not None:
            raw, method = self._source_j, self.source.name
        have_baseline = all(g.baseline_power_w is not None for g in per_gpu)
        idle_j = sum((g.baseline_power_w or 0.0) * g.window_s for g in per_gpu)
        adjusted = raw - idle_j if have_baseline and raw is not None else None
        first = next(iter(self._baselines.values.values()), None)
        return EnergyFigures(
            energy_method=method,
            **self._source_figures(nvml_j),
            energy_raw_j=raw,
            energy_window_s=max(g.window_s for g in per_gpu),
            baseline_power_w=(
                sum(g.baseline_power_w or 0.0 for g in per_gpu) if have_baseline else None
            ),
            baseline_state=first.state if first and have_baseline else None,
            baseline_method=first.method if first and have_baseline else None,
            baseline_source=self._baselines.source if have_baseline else None,
            baseline_age_s=self._baselines.age_s if have_baseline else None,
            energy_adjusted_j=adjusted,
            energy_raw_per_output_token_j=_per(raw, output_tokens),
            energy_adjusted_per_output_token_j=_per(adjusted, output_tokens),
            energy_raw_per_request_j=_per(raw, n_requests),
            energy_adjusted_per_request_j=_per(adjusted, n_requests),
            per_gpu=per_gpu,
            **self._host_figures(),
        )

    def _source_figures(self, nvml_j: float) -> dict[str, Any]:
        """Which source measured energy_raw_j, its version, and NVML's figure beside another."""
        if self.source is None:
            driver = self.driver[0]
            version = f"driver {driver}" if driver else None
            return {"energy_source": NVML, "energy_source_version": version}
        return {
            "energy_source": self.source.name,
            "energy_source_version": self.source.version,
            "energy_nvml_j": nvml_j,
        }

    def _host_figures(self) -> dict[str, Any]:
        """RAPL's record and its sums over sockets (null where no socket gave that domain)."""
        host = self._host
        if host is None:
            return {}
        package = [s.package_j for s in host.sockets if s.package_j is not None]
        dram = [s.dram_j for s in host.sockets if s.dram_j is not None]
        return {
            "host": host,
            "cpu_package_energy_j": sum(package) if package else None,
            "cpu_dram_energy_j": sum(dram) if dram else None,
        }

    def _flags(self, warnings: list[str]) -> MeasurementFlags:
        duration = self.window_edges.duration_s
        # With min_window_s on, the worker repeats passes until the window is long enough; the
        # warning is left for a user who turned it off or a pass too long for the time limit.
        minimum = self.config.window_minimum_s
        if not self.readers:
            short = None
        elif self.window_cut_by_time_limit:
            short = duration < max(minimum, SHORT_WINDOW_S)
        else:
            short = minimum == 0 and duration < SHORT_WINDOW_S
        if short and self.window_cut_by_time_limit:
            warnings.append(
                f"measured window is {duration:.2f} s, under min_window_s={minimum:g} s: one more "
                "pass of the prompt set would have run past the experiment's time limit; "
                "raise timeout_s or lower n_prompts"
            )
        elif short:
            warnings.append(
                f"measured window is {duration:.2f} s, under {SHORT_WINDOW_S:.0f} s with "
                "measurement.min_window_s=0: energy over short windows is noisy and biased low; "
                "set min_window_s (default 10) to repeat the prompt set"
            )
        flags = MeasurementFlags(
            short_window=short,
            baseline_stale=self._baselines.stale if self.readers else None,
            mig_enabled=any(g.mig_enabled for g in self.gpus) if self.gpus else None,
            persistence_mode_off=(
                any(g.persistence_mode is False for g in self.gpus) if self.gpus else None
            ),
            other_gpu_processes=any(g.compute_processes for g in self.gpus) if self.gpus else None,
            other_gpu_processes_in_window=self._others_in_window(warnings),
        )
        rows = [r for r in (self.sampler.rows if self.sampler else []) if r.phase == "measured"]
        reasons = [r.sample.throttle_reasons for r in rows if r.sample.throttle_reasons is not None]
        temps = [r.sample.temperature_c for r in rows if r.sample.temperature_c is not None]
        if reasons:
            seen = 0
            for value in reasons:
                seen |= value
            flags.throttled = bool(seen & SLOWDOWN_BITS)
            flags.thermal_throttled = bool(seen & THERMAL_BITS)
            flags.power_capped = bool(seen & POWER_BITS)
            if flags.throttled:
                kinds = [
                    name
                    for name, on in (
                        ("thermal", flags.thermal_throttled),
                        ("power cap", flags.power_capped),
                        ("hardware slowdown", not (flags.thermal_throttled or flags.power_capped)),
                    )
                    if on
                ]
                warnings.append(
                    f"GPU clocks were throttled during the window ({', '.join(kinds)}): "
                    "energy and throughput are not those of an unthrottled card"
                )
        if temps:
            flags.max_temperature_c = max(temps)
        return flags


def _per(energy_j: float | None, count: int) -> float | None:
    return energy_j / count if energy_j is not None and count else None
