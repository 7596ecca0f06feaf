"""MeasurementSession end to end with scripted GPUs: edges, baseline (measured, then cached),
adjusted and per-token energy, several GPUs, the short-window flag, and no GPU at all.

With the fake clock the sampler is off (sampler_hz 0): the clock only moves when the test or a
reader moves it, so every edge time, and hence every joule, is known in advance. The sampler's
own tests (throttle flags, time series, a failing reader) run it for real, for a fraction of a
second, on the monotonic clock; they assert only what cannot depend on scheduling.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from measure_fakes import FakeClock, ScriptedGpu, Trace, constant, wait_for_samples

from llenergymeasure.config.experiment import BaselineConfig, MeasurementConfig
from llenergymeasure.measure.energy import COUNTER, INTEGRATED_INSTANT, NO_ENERGY_WARNING
from llenergymeasure.measure.hoststat import HostUsage
from llenergymeasure.measure.nvml import GpuReader
from llenergymeasure.measure.phase_split import split_energy
from llenergymeasure.measure.rapl import RaplReader
from llenergymeasure.measure.sampler import Sampler
from llenergymeasure.measure.session import MeasurementSession, Report
from llenergymeasure.results.schema import EnergyFigures, MeasurementFlags

WALL0 = 1_700_000_000.0
# idle 80 W, 400 W from 107.5 s to 119 s (the workload), idle again after
LOAD_A = Trace([(0, 80), (107.5, 80), (107.5, 400), (119, 400), (119, 80)])
# a second GPU: idle 60 W, 300 W over the same span
LOAD_B = Trace([(0, 60), (107.5, 60), (107.5, 300), (119, 300), (119, 60)])


def exact(value: float) -> object:
    return pytest.approx(value, rel=1e-12, abs=1e-9)


def no_rapl(tmp_path: Path) -> RaplReader:
    return RaplReader(root=tmp_path / "no-powercap")


def fake_session(
    tmp_path: Path,
    clock: FakeClock,
    readers: list[GpuReader],
    *,
    baseline: bool = True,
    ttl_s: float = 3600.0,
    rapl: RaplReader | None = None,
    min_window_s: float = 10.0,
) -> MeasurementSession:
    config = MeasurementConfig(
        sampler_hz=0,
        baseline=BaselineConfig(enabled=baseline, duration_s=5.0, ttl_s=ttl_s),
        min_window_s=min_window_s,
    )
    return MeasurementSession(
        config,
        tmp_path / "cache",
        readers=readers,
        clock=clock,
        wall_clock=lambda: WALL0 + clock(),
        sleep=clock.sleep,
        rapl=rapl if rapl is not None else no_rapl(tmp_path),
    )


def run_window(
    session: MeasurementSession,
    clock: FakeClock,
    warmup_s: float = 2.0,
    window_s: float = 12.0,
    tokens: int = 400,
    requests: int = 8,
    inside: Callable[[], None] | None = None,
) -> Report:
    """The worker's sequence: attach (baseline), warm-up, window, report."""
    with session:
        session.attach(None)
        with session.sampling():
            clock.advance(warmup_s)
            with session.window():
                clock.advance(window_s)
                if inside is not None:
                    inside()
        return session.report(tokens, requests)


# ------------------------------------------------------------------------ one GPU, exact


def test_one_gpu_counter_window_baseline_and_per_token(tmp_path: Path) -> None:
    clock = FakeClock(100.0013)
    gpu = ScriptedGpu("GPU-a", clock, LOAD_A)
    session = fake_session(tmp_path, clock, [gpu])
    report = run_window(session, clock)
    # baseline: ticks 100.1 -> 105.2 at 80 W, both edges 1.3 ms after the tick: exactly 80 W.
    # warm-up to 107.2013; start edge: first read after the 107.3 tick ends at 107.3013;
    # 12 s of work to 119.3013; end edge: first read after the 119.4 tick ends at 119.4013.
    # Counter 107.3 -> 119.4: 80 W * 0.2 s + 400 W * 11.5 s + 80 W * 0.4 s = 4648 J; the end
    # edge logged instant power (80 W) from 119.3013 on, so the tail to 119.4013, 80 W * 0.1 s,
    # is removed: 4640 J over 119.3013 - 107.3013 = 12 s (= the trace's energy over exactly
    # [107.3013, 119.3013]: both edges sit 1.3 ms after their tick).
    e = report.energy
    assert e.energy_method == COUNTER
    assert e.energy_raw_j == exact(4648.0 - 8.0)
    assert e.energy_raw_j == exact(float(LOAD_A.energy_j("107.3013", "119.3013")))
    assert e.energy_window_s == exact(12.0)
    assert e.baseline_power_w == exact(80.0)
    assert e.baseline_method == "energy_counter"
    assert e.baseline_state == "model_loaded_idle"
    assert e.baseline_source == "measured"
    assert e.baseline_age_s == 0.0
    # adjusted = raw - baseline * energy window = 4640 - 80 * 12 = 320 W * 11.5 s
    assert e.energy_adjusted_j == exact(4640.0 - 80.0 * 12.0)
    assert e.energy_adjusted_j == exact(3680.0)
    assert e.energy_raw_per_output_token_j == exact(4640.0 / 400)
    assert e.energy_adjusted_per_output_token_j == exact(3680.0 / 400)
    assert e.energy_raw_per_request_j == exact(4640.0 / 8)
    assert e.energy_adjusted_per_request_j == exact(3680.0 / 8)
    assert e.cpu_package_energy_j is None
    (g,) = e.per_gpu
    assert (g.uuid, g.method, g.edge_synced) == ("GPU-a", COUNTER, True)
    assert g.energy_j == exact(4640.0)
    assert g.window_s == exact(12.0)
    assert g.edge_uncertainty_s == exact(0.008)
    assert g.baseline_power_w == exact(80.0)

    w = session.window_edges
    assert (w.start_s, w.end_s) == (exact(107.3013), exact(119.3013))
    assert w.duration_s == exact(12.0)
    assert (w.start_unix_s, w.end_unix_s) == (exact(WALL0 + 107.3013), exact(WALL0 + 119.3013))
    assert e.energy_window_s >= w.duration_s  # the counter window covers the measured one

    assert report.flags == MeasurementFlags(
        short_window=False,
        energy_counter_unsupported=False,
        baseline_stale=False,
        other_gpu_processes_in_window=False,  # the scripted GPU lists no process
    )
    assert report.warnings == []
    assert session.write_timeseries(tmp_path / "ts.parquet") is False  # sampler off
    # the energy counter was read at the edges only, never in between
    assert all(not (107.31 < t < 119.3) for t, _ in gpu.energy_reads)


def test_baseline_is_reused_from_the_cache_by_the_next_session(tmp_path: Path) -> None:
    clock = FakeClock(100.0013)
    gpu = ScriptedGpu("GPU-a", clock, LOAD_A)
    first = run_window(fake_session(tmp_path, clock, [gpu]), clock)
    assert first.energy.baseline_source == "measured"
    assert len(list((tmp_path / "cache").glob("baseline-*.json"))) == 1

    clock.advance(60.0)  # 119.5013 (end tick + one more, for the period) -> 179.5013
    calls, sleeps = gpu.energy_calls, len(clock.sleeps)
    session = fake_session(tmp_path, clock, [gpu])
    with session:
        session.attach(None)
        assert gpu.energy_calls == calls  # no baseline measurement: nothing read
        assert len(clock.sleeps) == sleeps
        assert clock() == exact(179.5013)
        with session.window():
            clock.advance(12.0)
        report = session.report(400, 8)
    e = report.energy
    assert e.baseline_source == "cache"
    # measured at the end of the first baseline (wall 105.2013), reused at 179.5013
    # (wall-clock floats near 1.7e9 s carry ~0.2 µs)
    assert e.baseline_age_s == pytest.approx(179.5013 - 105.2013, abs=1e-6)
    assert e.baseline_power_w == exact(80.0)
    # idle all through (start tick 179.6, seen 179.6013; end 191.6013): 80 W * 12 s, adjusted 0
    assert e.energy_raw_j == exact(80.0 * 12.0)
    assert e.energy_window_s == exact(12.0)
    assert e.energy_adjusted_j == pytest.approx(0.0, abs=1e-9)
    assert report.flags.baseline_stale is False


def test_expired_cache_is_measured_again(tmp_path: Path) -> None:
    clock = FakeClock(100.0013)
    gpu = ScriptedGpu("GPU-a", clock, LOAD_A)
    run_window(fake_session(tmp_path, clock, [gpu], ttl_s=30.0), clock)
    clock.advance(60.0)  # the 105.2013 baseline is 74.2 s old: over the 30 s TTL
    report = run_window(fake_session(tmp_path, clock, [gpu], ttl_s=30.0), clock)
    assert report.energy.baseline_source == "measured"
    assert report.energy.baseline_power_w == exact(80.0)
    cached = fake_session(tmp_path, clock, [gpu]).cache.get("GPU-a")
    assert cached is not None
    assert cached.measured_at_unix_s > WALL0 + 179.4013  # rewritten by the second session


def test_baseline_off_leaves_adjusted_null(tmp_path: Path) -> None:
    clock = FakeClock(100.0013)
    gpu = ScriptedGpu("GPU-a", clock, LOAD_A)
    report = run_window(fake_session(tmp_path, clock, [gpu], baseline=False), clock, warmup_s=7.2)
    # no baseline: warm-up alone brings the clock from 100.0013 to 107.2013, as above
    e = report.energy
    assert e.energy_raw_j == exact(4640.0)
    assert e.energy_raw_per_output_token_j == exact(4640.0 / 400)
    for name in (
        "baseline_power_w",
        "baseline_state",
        "baseline_method",
        "baseline_source",
        "baseline_age_s",
        "energy_adjusted_j",
        "energy_adjusted_per_output_token_j",
        "energy_adjusted_per_request_j",
    ):
        assert getattr(e, name) is None, name
    assert not (tmp_path / "cache").exists()


def test_zero_tokens_or_requests_give_null_ratios_not_errors(tmp_path: Path) -> None:
    clock = FakeClock(100.0013)
    gpu = ScriptedGpu("GPU-a", clock, LOAD_A)
    report = run_window(fake_session(tmp_path, clock, [gpu]), clock, tokens=0, requests=0)
    e = report.energy
    assert e.energy_raw_j == exact(4640.0)
    assert e.energy_adjusted_j == exact(3680.0)
    assert e.energy_raw_per_output_token_j is None
    assert e.energy_adjusted_per_output_token_j is None
    assert e.energy_raw_per_request_j is None
    assert e.energy_adjusted_per_request_j is None


# ----------------------------------------------------------------------------- two GPUs


def test_two_gpus_are_summed(tmp_path: Path) -> None:
    clock = FakeClock(100.0013)
    a = ScriptedGpu("GPU-a", clock, LOAD_A)
    b = ScriptedGpu("GPU-b", clock, LOAD_B)
    session = fake_session(tmp_path, clock, [a, b])
    report = run_window(session, clock)
    # Reads alternate a, b (4 ms each), so each GPU is read every 8 ms.
    # Baseline edges: a 100.1013 -> 105.2053 (5.104 s), b 100.1053 -> 105.2013 (5.096 s), both
    # over the ticks 100.1 -> 105.2 (5.1 s): a 80 W * 5.1 / 5.104, b 60 W * 5.1 / 5.096 (the
    # read-interval edge error; both within 8 ms / 5.1 s of the truth).
    base_a, base_b = 80.0 * 5.1 / 5.104, 60.0 * 5.1 / 5.096
    # Start edges: a 107.3053, b 107.3013 (ticks 107.3). The window runs 107.3053 -> 119.3053.
    # End edges: a's tick 119.4 seen at 119.4053, b's at 119.4013. Counters 107.3 -> 119.4:
    # a 4648 J, b 60*0.2 + 300*11.5 + 60*0.4 = 3486 J. Instant power logged from the window's
    # end removes each tail: a 80 W from 119.3053 to 119.4053 = 8 J; b's first log is at
    # 119.3093 (after a's read), held back to 119.3053: 60 W * (119.4013 - 119.3053) = 5.76 J.
    # Per-GPU windows: a 119.3053 - 107.3053 = 12.0 s, b 119.3053 - 107.3013 = 12.004 s.
    raw_a, raw_b = 4648.0 - 8.0, 3486.0 - 60.0 * 0.096
    e = report.energy
    assert [(g.uuid, g.energy_j, g.window_s) for g in e.per_gpu] == [
        ("GPU-a", exact(raw_a), exact(12.0)),
        ("GPU-b", exact(raw_b), exact(12.004)),
    ]
    assert [g.baseline_power_w for g in e.per_gpu] == [exact(base_a), exact(base_b)]
    assert [g.edge_uncertainty_s for g in e.per_gpu] == [exact(0.016), exact(0.016)]
    assert e.energy_method == COUNTER
    assert e.energy_raw_j == exact(raw_a + raw_b)
    assert e.baseline_power_w == exact(base_a + base_b)
    assert e.energy_window_s == exact(12.004)  # the longest per-GPU window
    # adjusted: each GPU's baseline over its own window, summed
    adjusted = raw_a - base_a * 12.0 + raw_b - base_b * 12.004
    assert e.energy_adjusted_j == exact(adjusted)
    assert e.energy_raw_per_output_token_j == exact((raw_a + raw_b) / 400)
    assert e.energy_adjusted_per_request_j == exact(adjusted / 8)
    assert session.window_edges.start_s == exact(107.3053)  # after the slower GPU's edge
    assert report.warnings == []


def test_one_unmeasurable_gpu_makes_the_total_null_not_partial(tmp_path: Path) -> None:
    clock = FakeClock(100.0013)
    a = ScriptedGpu("GPU-a", clock, LOAD_A)
    blind = ScriptedGpu("GPU-blind", clock, LOAD_B, counter=False, instant=False, average=False)
    report = run_window(fake_session(tmp_path, clock, [a, blind]), clock)
    e = report.energy
    assert e.energy_raw_j is None
    assert e.energy_adjusted_j is None
    assert e.energy_method is None
    assert [g.energy_j for g in e.per_gpu] == [exact(4640.0), None]
    assert report.flags.energy_counter_unsupported is True
    text = " | ".join(report.warnings)
    assert "idle baseline unavailable" in text
    assert "GPU-blind: the NVML energy counter is not supported" in text
    assert "GPU-blind: too few power samples" in text


# ------------------------------------------------------------------------- flags, no GPU


@pytest.mark.parametrize(
    ("min_window_s", "cut_by_time_limit", "words"),
    [
        (0.0, False, "under 10 s with measurement.min_window_s=0"),
        (
            10.0,
            True,
            "under min_window_s=10 s: one more pass of the prompt set would have run past",
        ),
        (10.0, False, None),  # the worker filled the window; a 2 s window is then its own choice
    ],
)
def test_short_window_warned_only_when_off_or_cut_by_time_limit(
    tmp_path: Path, min_window_s: float, cut_by_time_limit: bool, words: str | None
) -> None:
    clock = FakeClock(100.0013)
    gpu = ScriptedGpu("GPU-a", clock, constant(300))
    session = fake_session(tmp_path, clock, [gpu], min_window_s=min_window_s)
    session.window_cut_by_time_limit = cut_by_time_limit
    report = run_window(session, clock, window_s=2.0)
    assert report.flags.short_window is (words is not None)
    if words is not None:
        (warning,) = report.warnings
        assert words in warning
    else:
        assert report.warnings == []
    # counter ticks 107.3 -> 109.4, less the 0.1 s tail after the window: 300 W * 2 s
    assert report.energy.energy_raw_j == exact(300.0 * 2.0)
    assert report.energy.energy_adjusted_j == pytest.approx(0.0, abs=1e-9)


def test_window_of_exactly_ten_seconds_is_not_short(tmp_path: Path) -> None:
    clock = FakeClock(100.0013)
    gpu = ScriptedGpu("GPU-a", clock, constant(300))
    report = run_window(fake_session(tmp_path, clock, [gpu]), clock, window_s=10.0)
    assert report.flags.short_window is False


def test_stale_cached_baseline_is_used_and_flagged_when_remeasuring_fails(
    tmp_path: Path,
) -> None:
    clock = FakeClock(100.0013)
    gpu = ScriptedGpu("GPU-a", clock, LOAD_A)
    run_window(fake_session(tmp_path, clock, [gpu], ttl_s=30.0), clock)
    clock.advance(600.0)
    gpu.counter = gpu.instant = False  # now nothing can re-measure the idle power
    session = fake_session(tmp_path, clock, [gpu], ttl_s=30.0)
    report = run_window(session, clock)
    assert report.flags.baseline_stale is True
    assert any("could not be re-measured" in w for w in report.warnings), report.warnings
    quality = session.quality(min_window_s=10.0, passes=1, latency_ratio=None)
    assert (quality.baseline_stale, quality.baseline_source) == (True, "cache")
    assert quality.baseline_age_s is not None and quality.baseline_age_s > 600
    assert quality.baseline_state == "model_loaded_idle"
    assert any("idle baseline is stale" in r for r in quality.reasons), quality.reasons
    assert any("energy of the window unknown" in r for r in quality.reasons), quality.reasons


def _no_gpu_energy(e: EnergyFigures) -> None:
    assert e.per_gpu == []
    data = e.model_dump(exclude={"per_gpu", "cpu_package_energy_j", "cpu_dram_energy_j", "host"})
    assert all(v is None for v in data.values()), data


def test_no_gpu_gives_null_energy_and_the_warning_never_zero(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    session = fake_session(tmp_path, clock, [])
    report = run_window(session, clock, window_s=12.0)
    _no_gpu_energy(report.energy)
    assert report.energy.model_dump(exclude={"host"}) == EnergyFigures().model_dump(
        exclude={"host"}
    )
    host = report.energy.host
    assert host is not None and not host.readable  # said so, not left blank
    assert host.reason is not None and "no-powercap does not exist" in host.reason
    assert NO_ENERGY_WARNING in report.warnings
    assert report.flags.energy_counter_unsupported is None
    assert report.flags.baseline_stale is None
    assert report.flags.throttled is None
    assert session.window_edges.duration_s == exact(12.0)
    assert not (tmp_path / "cache").exists()


def test_no_gpu_still_reports_cpu_package_energy_from_rapl(tmp_path: Path) -> None:
    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text("1000000\n")
    clock = FakeClock(100.0)
    session = fake_session(tmp_path, clock, [], rapl=RaplReader(root=tmp_path / "powercap"))

    def cpu_work() -> None:
        (zone / "energy_uj").write_text("1250000\n")  # 0.25 J during the window

    report = run_window(session, clock, inside=cpu_work)
    assert report.energy.cpu_package_energy_j == exact(0.25)
    assert report.energy.host is not None and report.energy.host.readable
    assert report.energy.cpu_dram_energy_j is None  # no dram zone: null, not 0
    _no_gpu_energy(report.energy)
    assert NO_ENERGY_WARNING in report.warnings


# ------------------------------------------------- the sampler, for real (monotonic clock)


def real_session(tmp_path: Path, readers: list[GpuReader], hz: float = 50) -> MeasurementSession:
    config = MeasurementConfig(
        sampler_hz=hz, baseline=BaselineConfig(enabled=False), min_window_s=0
    )
    return MeasurementSession(config, tmp_path / "cache", readers=readers, rapl=no_rapl(tmp_path))


THROTTLE_CASES = [
    # bits during the window, (throttled, thermal, power capped), words in the warning
    (0x0, (False, False, False), None),
    (0x1, (False, False, False), None),  # "GPU idle" is not a slowdown
    (0x4, (True, False, True), "power cap"),  # SW power cap
    (0x80, (True, False, True), "power cap"),  # HW power brake
    (0x8, (True, False, False), "hardware slowdown"),
    (0x20, (True, True, False), "thermal"),  # SW thermal
    (0x40, (True, True, False), "thermal"),  # HW thermal
    (0x20 | 0x4, (True, True, True), "thermal, power cap"),
]


@pytest.mark.parametrize(("bits", "expected", "words"), THROTTLE_CASES)
def test_throttle_flags_come_from_the_measured_phase_only(
    tmp_path: Path, bits: int, expected: tuple[bool, bool, bool], words: str | None
) -> None:
    # other bits (and a hotter card) in warm-up and cool-down: they must not count
    gpu = ScriptedGpu(
        "GPU-a",
        time.monotonic,
        constant(250),
        counter=False,
        throttle_reasons=0x8 | 0x20 | 0x4,
        temperature_c=95.0,
    )
    session = real_session(tmp_path, [gpu])
    with session:
        session.attach(None)
        with session.sampling():
            wait_for_samples(gpu)
            gpu.throttle_reasons, gpu.temperature_c = 0, 60.0
            wait_for_samples(gpu)  # every sample still in flight now reads 0
            with session.window():
                gpu.throttle_reasons, gpu.temperature_c = bits, 71.0
                wait_for_samples(gpu, 3)
                gpu.throttle_reasons, gpu.temperature_c = 0, 60.0
                wait_for_samples(gpu)
            gpu.throttle_reasons, gpu.temperature_c = 0x8 | 0x20 | 0x4, 95.0
            wait_for_samples(gpu)
        report = session.report(100, 4)
    flags = report.flags
    assert (flags.throttled, flags.thermal_throttled, flags.power_capped) == expected
    assert flags.max_temperature_c == 71.0
    throttle_lines = [w for w in report.warnings if "throttled" in w]
    if words is None:
        assert throttle_lines == []
    else:
        (line,) = throttle_lines
        assert f"({words})" in line


def test_sampled_fallback_energy_and_timeseries(tmp_path: Path) -> None:
    gpu = ScriptedGpu("GPU-a", time.monotonic, constant(250), counter=False)
    session = real_session(tmp_path, [gpu])
    with session:
        session.attach(None)
        with session.sampling():
            wait_for_samples(gpu)
            with session.window():
                wait_for_samples(gpu, 5)
            wait_for_samples(gpu)
        report = session.report(100, 4)
        assert session.write_timeseries(tmp_path / "timeseries.parquet")
    w = session.window_edges
    e = report.energy
    # no counter: instant power integrated; a constant 250 W held to the edges is exact
    assert e.energy_method == INTEGRATED_INSTANT
    assert e.energy_raw_j == pytest.approx(250.0 * w.duration_s, rel=1e-9)
    assert e.energy_window_s == w.duration_s
    assert report.flags.energy_counter_unsupported is True
    assert any("not supported" in x for x in report.warnings)
    assert report.flags.short_window is True

    frame = pd.read_parquet(tmp_path / "timeseries.parquet")
    assert list(frame.columns) == [
        "t_s",
        "phase",
        "gpu_index",
        "gpu_uuid",
        "power_w",
        "power_avg_w",
        "power_instant_w",
        "temperature_c",
        "gpu_util_pct",
        "mem_util_pct",
        "memory_used_mb",
        "sm_clock_mhz",
        "throttle_reasons",
    ]
    assert set(frame["phase"]) == {"warmup", "measured", "cooldown"}
    assert set(frame["gpu_uuid"]) == {"GPU-a"}
    assert set(frame["gpu_index"]) == {0}
    assert (frame["power_w"] == 250.0).all()
    assert frame["t_s"].is_monotonic_increasing
    # t_s is seconds from the window start: warm-up before it, cool-down after its end
    assert (frame.loc[frame["phase"] == "warmup", "t_s"] < 0).all()
    assert (frame.loc[frame["phase"] == "cooldown", "t_s"] > w.duration_s).all()
    measured = frame.loc[frame["phase"] == "measured", "t_s"]
    assert len(measured) >= 3
    assert measured.between(-0.01, w.duration_s + 0.01).all()
    assert gpu.energy_calls == 2  # asked at each edge, found unsupported, never polled
    # The sampler's own time in reads is a positive share of the window (how small is the
    # machine's load: benchmarks measure it on a GPU).
    busy = session.sampler_busy_fraction()
    assert busy is not None
    assert 0 < busy <= 1


def test_sampler_failure_still_gives_a_report_with_a_warning(tmp_path: Path) -> None:
    gpu = ScriptedGpu("GPU-a", time.monotonic, constant(250), fail_sample=True)
    session = real_session(tmp_path, [gpu])
    with session:
        session.attach(None)
        with session.sampling(), session.window():
            wait_for_samples(gpu)  # each one fails
        report = session.report(100, 4)
        assert session.write_timeseries(tmp_path / "ts.parquet") is False
    assert any(
        w.startswith("sampler read errors") and "NVML_ERROR_UNKNOWN" in w for w in report.warnings
    ), report.warnings
    # the counter (real clock, 100 ms ticks) still gives the window's energy. How many joules
    # is the fake-clock tests' (test_one_gpu_counter_window_baseline_and_per_token and on):
    # on a real clock a loaded machine decides how long the window and its edges' reads take,
    # which once failed a bound here (issue 28.8)
    e = report.energy
    assert e.energy_method == COUNTER
    assert e.energy_raw_j is not None and e.energy_raw_j >= 0
    (g,) = e.per_gpu
    assert g.edge_synced is True
    assert report.flags.throttled is None  # no samples, no verdict


def test_timeseries_power_w_falls_back_to_average_power(tmp_path: Path) -> None:
    gpu = ScriptedGpu("GPU-a", time.monotonic, constant(123), counter=False, instant=False)
    with Sampler([gpu], 50) as sampler:
        wait_for_samples(gpu)
    assert sampler.rows
    assert sampler.warnings() == []
    sampler.write_parquet(tmp_path / "ts.parquet", sampler.rows[0].t_s)
    frame = pd.read_parquet(tmp_path / "ts.parquet")
    assert frame["power_instant_w"].isna().all()
    assert (frame["power_w"] == 123.0).all()
    assert frame["power_w"].dtype == "float64"
    assert frame["t_s"].iloc[0] == 0.0


@pytest.mark.parametrize("hz", [0, -1, 51])
def test_sampler_rate_is_bounded(hz: float) -> None:
    with pytest.raises(ValueError, match="sampler rate"):
        Sampler([], hz)


# ------------------------------------------------------------------------ quality record


def test_quality_record_of_a_clean_window(tmp_path: Path) -> None:
    clock = FakeClock(100.0013)
    gpu = ScriptedGpu("GPU-a", clock, LOAD_A)
    session = fake_session(tmp_path, clock, [gpu])
    report = run_window(session, clock)
    quality = session.quality(min_window_s=10.0, passes=3, latency_ratio=1.02)
    assert quality.status == "ok", quality.reasons
    assert quality.reasons == []
    # the end tick at 119.4 was seen at 119.4013, the next one (119.5) at 119.5013
    assert quality.counter_update_period_s == exact(0.1)
    (record,) = report.energy.per_gpu
    # each edge saw its tick within one 4 ms read: 8 ms at the window's mean power
    assert record.edge_uncertainty_s == exact(0.008)
    assert quality.edge_uncertainty_j == exact(0.008 * 4640.0 / 12.0)
    assert quality.edge_uncertainty_pct == exact(100 * 0.008 / 12.0)
    assert (quality.sampler_coverage, quality.sampler_largest_gap_s) == (None, None)  # 0 Hz
    assert quality.throttled_share is None
    assert (quality.baseline_source, quality.baseline_age_s) == ("measured", 0.0)
    assert (quality.baseline_state, quality.baseline_stale) == ("model_loaded_idle", False)
    assert quality.window_s == exact(12.0)
    assert (quality.min_window_s, quality.window_meets_minimum, quality.passes) == (10.0, True, 3)
    assert quality.window_to_warmup_latency_ratio == 1.02


@pytest.mark.parametrize(
    ("tick_s", "min_window_s", "window_s", "ratio", "baseline", "expected"),
    [
        # a counter that updates every 1 s: the start edge (102.0 s) meets no tick within
        # its 0.3 s wait, the end edge (114.8 s) meets the one at 115 s
        (1.0, 10.0, 12.5, None, False, ["not aligned to an energy-counter update"]),
        (0.1, 0.0, 4.0, None, True, ["under 10 s with min_window_s off"]),
        (0.1, 10.0, 4.0, None, True, ["under its minimum of 10 s"]),
        (0.1, 10.0, 12.0, 1.3, True, ["took 1.30x warm-up's"]),
        (0.1, 10.0, 12.0, None, False, []),  # baseline off by choice: nothing to check
    ],
)
def test_quality_checks_name_their_reason(
    tmp_path: Path,
    tick_s: float,
    min_window_s: float,
    window_s: float,
    ratio: float | None,
    baseline: bool,
    expected: list[str],
) -> None:
    clock = FakeClock(100.0013)
    gpu = ScriptedGpu("GPU-a", clock, LOAD_A, tick_s=tick_s)
    session = fake_session(tmp_path, clock, [gpu], min_window_s=min_window_s, baseline=baseline)
    run_window(session, clock, window_s=window_s)
    quality = session.quality(min_window_s=min_window_s, passes=1, latency_ratio=ratio)
    assert quality.status == ("check" if expected else "ok")
    assert len(quality.reasons) == len(expected), quality.reasons
    for reason, words in zip(quality.reasons, expected, strict=True):
        assert words in reason
    if tick_s > 1:
        assert quality.counter_update_period_s is None  # no two ticks seen: not guessed


def test_quality_without_a_gpu_has_null_energy_items(tmp_path: Path) -> None:
    clock = FakeClock(5.0)
    session = fake_session(tmp_path, clock, [])
    run_window(session, clock, window_s=3.0)
    quality = session.quality(min_window_s=0.0, passes=1, latency_ratio=0.97)
    assert quality.status == "ok"
    assert quality.counter_update_period_s is None
    assert quality.edge_uncertainty_j is None
    assert quality.sampler_coverage is None
    assert quality.baseline_source is None
    assert quality.baseline_stale is None
    assert quality.window_s == exact(3.0)


def test_quality_names_host_noise_read_at_the_window_edges(tmp_path: Path) -> None:
    clock = FakeClock(100.0013)
    edges = iter([HostUsage(steal_s=50.0, process_cpu_s=3.0), HostUsage(50.25, 14.5)])
    session = fake_session(tmp_path, clock, [ScriptedGpu("GPU-a", clock, LOAD_A)])
    session.host = lambda: next(edges)
    run_window(session, clock)
    quality = session.quality(min_window_s=10.0, passes=1, latency_ratio=None)
    assert (quality.host_steal_s, quality.host_cpu_s) == (exact(0.25), exact(11.5))
    assert (quality.gpu_busy_share, quality.host_bound) == (None, None)  # sampler off
    assert quality.status == "ok", quality.reasons


@pytest.mark.parametrize(
    ("util_pct", "host_bound"), [(30.0, True), (49.0, True), (50.0, False), (95.0, False)]
)
def test_host_bound_from_the_gpu_busy_share_of_the_window(
    tmp_path: Path, util_pct: float, host_bound: bool
) -> None:
    # a busy GPU outside the window must not count; a second GPU only raises the share
    gpu = ScriptedGpu("GPU-a", time.monotonic, constant(250), counter=False, gpu_util_pct=100.0)
    idle = ScriptedGpu("GPU-b", time.monotonic, constant(90), counter=False, gpu_util_pct=0.0)
    session = real_session(tmp_path, [gpu, idle])
    with session:
        session.attach(None)
        with session.sampling():
            time.sleep(0.1)
            gpu.gpu_util_pct = util_pct
            time.sleep(0.06)  # every sample still in flight now reads util_pct
            with session.window():
                time.sleep(0.2)
            time.sleep(0.06)
            gpu.gpu_util_pct = 100.0
            time.sleep(0.1)
        session.report(100, 4)
    quality = session.quality(min_window_s=0.0, passes=1, latency_ratio=None)
    assert quality.gpu_busy_share == exact(util_pct / 100)
    assert quality.host_bound is host_bound
    bound = [r for r in quality.reasons if r.startswith("host-bound")]
    assert len(bound) == host_bound
    if host_bound:
        assert f"a GPU kernel ran in {util_pct:.0f}% of the window" in bound[0]
        assert "throughput follows the host CPU's pace" in bound[0]
        assert "worker CPU" in bound[0]


def test_quality_sampler_coverage_gap_and_throttled_share(tmp_path: Path) -> None:
    gpu = ScriptedGpu("GPU-a", time.monotonic, constant(250), counter=False, throttle_reasons=0)
    session = real_session(tmp_path, [gpu])
    with session:
        session.attach(None)
        with session.sampling(), session.window():
            wait_for_samples(gpu, 3)
            gpu.throttle_reasons = 0x20  # SW thermal slowdown for the rest of the window
            wait_for_samples(gpu, 3)
        session.report(100, 4)
    quality = session.quality(min_window_s=0.0, passes=1, latency_ratio=None)
    rows = [r for r in session.sampler.rows if r.phase == "measured"] if session.sampler else []
    throttled = [bool(r.sample.throttle_reasons) for r in rows]
    assert quality.throttled_share == pytest.approx(sum(throttled) / len(throttled))
    assert 0 < quality.throttled_share < 1
    assert quality.sampler_coverage is not None
    assert 0 < quality.sampler_coverage <= 1
    assert quality.sampler_largest_gap_s is not None  # a wall-clock gap: bounded, not timed
    assert 0 < quality.sampler_largest_gap_s <= session.window_edges.duration_s
    assert quality.status == "check"
    assert any("throttled in" in r for r in quality.reasons)


# ------------------------------------------------------------------------ phase split


def test_prefill_side_window_energy_and_split(tmp_path: Path) -> None:
    """Main window: 12 s of LOAD_A (4640 J, 8 requests). Then a prefill pass at 250 W for
    2 s serving the same 8 requests: its own window, edges synced like the main one's."""
    clock = FakeClock(100.0013)
    trace = Trace([*LOAD_A.points, (125, 80), (125, 250), (127, 250), (127, 80)])
    gpu = ScriptedGpu("GPU-a", clock, trace)
    session = fake_session(tmp_path, clock, [gpu])
    with session:
        session.attach(None)
        with session.sampling():
            clock.advance(2.0)
            with session.window():
                clock.advance(12.0)
            clock.advance(125.0 - clock() - 0.05)  # the prefill pass starts at ~125 s
            with session.side_window("prefill") as side:
                clock.advance(2.0)
        report = session.report(400, 8)
    assert report.energy.energy_raw_j == exact(4640.0)  # the main window is untouched
    assert side.method == COUNTER
    # start edge: reads every 4 ms from 124.95, the 125.0 tick seen at 125.002; 2 s of work
    # to 127.002; the end edge sees the 127.1 tick at 127.102. Counter 125.0 -> 127.1: 508 J,
    # less the tail logged from 127.002 to 127.102 (80 W x 0.1 s): 500 J, within the edges'
    # uncertainty (4 ms x 250 W) of the trace's energy over [125.002, 127.002].
    assert (side.start_s, side.duration_s) == (exact(125.002), exact(2.0))
    assert side.energy_j == exact(float(trace.energy_j("125.0", "127.1")) - 80 * 0.1)
    assert side.energy_j == pytest.approx(float(trace.energy_j("125.002", "127.002")), abs=1.0)
    split = split_energy(
        window_energy_j=report.energy.energy_raw_j,
        window_requests=8,
        input_tokens=160,
        output_tokens=400,
        prefill_energy_j=side.energy_j,
        prefill_requests=8,
        prefill_output_tokens=8,
        prefill_window_s=side.duration_s,
        prefill_passes=1,
    )
    prefill_j = 500.0
    assert split.method == "prefill_pass"
    assert split.energy_prefill_j == exact(prefill_j)
    assert split.energy_decode_j == exact(4640.0 - prefill_j)
    assert split.energy_per_input_token_j == exact(prefill_j / 160)
    assert split.decode_tokens == 400 - 8
    assert split.energy_per_output_token_j == exact((4640.0 - prefill_j) / 392)


@pytest.mark.parametrize(
    ("prefill_requests", "passes", "scale"), [(8, 1, 1.0), (24, 3, 1 / 3), (4, 1, 2.0)]
)
def test_prefill_energy_is_scaled_per_request(
    prefill_requests: int, passes: int, scale: float
) -> None:
    split = split_energy(
        window_energy_j=1000.0,
        window_requests=8,
        input_tokens=80,
        output_tokens=8,  # one token each: nothing left for decode per token
        prefill_energy_j=300.0,
        prefill_requests=prefill_requests,
        prefill_output_tokens=prefill_requests,
        prefill_window_s=1.0,
        prefill_passes=passes,
    )
    assert split.energy_prefill_j == exact(300.0 * scale)
    assert split.energy_decode_j == exact(1000.0 - 300.0 * scale)
    assert split.decode_tokens == 0
    assert split.energy_per_output_token_j is None  # no decode tokens: null, never a division


def test_prefill_split_without_energy_is_null_not_zero(tmp_path: Path) -> None:
    clock = FakeClock(5.0)
    session = fake_session(tmp_path, clock, [])
    with session, session.side_window("prefill") as side:
        clock.advance(1.0)
    assert (side.energy_j, side.duration_s) == (None, exact(1.0))
    split = split_energy(
        window_energy_j=None,
        window_requests=4,
        input_tokens=40,
        output_tokens=20,
        prefill_energy_j=None,
        prefill_requests=4,
        prefill_output_tokens=4,
        prefill_window_s=1.0,
        prefill_passes=1,
    )
    assert split.energy_prefill_j is split.energy_decode_j is None
    assert split.energy_per_input_token_j is split.energy_per_output_token_j is None


# ------------------------------------------------------------ other processes in the window

ME = 4242  # the worker's own context, seen from attach (after load) on


@pytest.mark.parametrize(
    ("pids", "others"),
    [
        # answers: attach, window start, window end
        ([{ME}, {ME}, {ME}], None),
        ([{ME}, {ME}, {ME, 777}], "777"),  # started during the window, still there at its end
        ([{ME}, {ME, 555}, {ME}], "555"),  # left during the window
        ([{ME}, {ME}, None], None),  # unreadable at one edge: unknown, not a false "alone"
    ],
    ids=["alone", "arrived", "left", "one-edge-unreadable"],
)
def test_other_processes_at_the_window_edges_are_flagged(
    tmp_path: Path, pids: list[set[int] | None], others: str | None
) -> None:
    clock = FakeClock(100.0)
    gpu = ScriptedGpu("GPU-a", clock, LOAD_A, pids=list(pids))
    report = run_window(fake_session(tmp_path, clock, [gpu], baseline=False), clock)
    if pids[2] is None:
        assert report.flags.other_gpu_processes_in_window is None
        return
    assert report.flags.other_gpu_processes_in_window is (others is not None)
    said = [w for w in report.warnings if "during the measured window" in w]
    assert len(said) == (0 if others is None else 1), report.warnings
    assert all(w.startswith("GPU-a: 1 other process(es) used the GPU") for w in said)
    assert all(f"(pid {others})" in w and "energy is counted" in w for w in said)


def test_no_gpu_leaves_the_window_process_flag_unknown(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    report = run_window(fake_session(tmp_path, clock, []), clock)
    assert report.flags.other_gpu_processes_in_window is None
