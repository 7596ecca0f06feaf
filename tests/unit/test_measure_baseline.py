"""Idle baseline from scripted GPUs, and its per-GPU cache file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from measure_fakes import FakeClock, ScriptedGpu, Trace, constant

from llenergymeasure.measure.baseline import (
    BASELINE_STATE,
    Baseline,
    BaselineCache,
    measure_baseline,
)

WALL0 = 1_700_000_000.0


def exact(value: float) -> object:
    return pytest.approx(value, rel=1e-12, abs=1e-12)


def wall_for(clock: FakeClock):
    return lambda: WALL0 + clock()


def test_counter_baseline_is_the_exact_mean_of_a_constant_idle_trace() -> None:
    clock = FakeClock(100.0013)
    gpu = ScriptedGpu("GPU-a", clock, constant(80))
    got = measure_baseline([gpu], 5.0, clock, sleep=clock.sleep, wall_clock=wall_for(clock))
    # start edge: reads end 100.0053, ..., 100.1013 (first after the 100.1 tick);
    # then 5 s of sleep to 105.1013; end edge: 105.1053, ..., 105.2013 (after the 105.2 tick).
    # Both edges sit 1.3 ms after their tick, so the window is exactly 5.1 s of 80 W.
    baseline = got["GPU-a"]
    assert baseline.power_w == exact(80.0)
    assert baseline.method == "energy_counter"
    assert baseline.duration_s == exact(5.1)
    assert baseline.measured_at_unix_s == exact(WALL0 + 105.2013)
    assert baseline.state == BASELINE_STATE
    assert sum(clock.sleeps) == exact(5.0)
    assert max(clock.sleeps) <= 0.1  # polls at <= 10 Hz


def test_counter_baseline_of_a_varying_trace_is_energy_over_tick_time() -> None:
    clock = FakeClock(100.0013)
    trace = Trace([(0, 60), (102.0, 60), (102.0, 120)])  # idle steps up mid-baseline
    gpu = ScriptedGpu("GPU-a", clock, trace)
    baseline = measure_baseline([gpu], 5.0, clock, sleep=clock.sleep)["GPU-a"]
    # ticks 100.1 -> 105.2: 60 W * 1.9 s + 120 W * 3.2 s over 5.1 s
    assert baseline.power_w == exact((60 * 1.9 + 120 * 3.2) / 5.1)


def test_instant_power_mean_when_the_counter_is_unsupported() -> None:
    clock = FakeClock(50.0)
    ramp = Trace([(50.0, 70), (51.0, 90)])  # 70 W rising to 90 W over the second
    gpu = ScriptedGpu("GPU-a", clock, ramp, counter=False, instant_cost_s=0.0)
    baseline = measure_baseline([gpu], 1.0, clock, sleep=clock.sleep)["GPU-a"]
    # read at 50.0, 50.1, ..., 50.9 (10 Hz): 70 + 2 i W for i = 0..9, mean 79 W
    assert baseline.method == "instant_power_mean"
    assert baseline.power_w == exact(79.0)
    assert baseline.duration_s == 1.0


def test_mixed_gpus_each_get_their_own_method() -> None:
    clock = FakeClock(100.0013)
    a = ScriptedGpu("GPU-a", clock, constant(80))
    b = ScriptedGpu("GPU-b", clock, constant(65), counter=False, instant_cost_s=0.0)
    got = measure_baseline([a, b], 2.0, clock, sleep=clock.sleep)
    assert got["GPU-a"].method == "energy_counter"
    assert got["GPU-a"].power_w == exact(80.0)
    assert got["GPU-b"].method == "instant_power_mean"
    assert got["GPU-b"].power_w == exact(65.0)


def test_no_reading_at_all_gives_no_baseline() -> None:
    clock = FakeClock(10.0)
    gpu = ScriptedGpu("GPU-a", clock, constant(80), counter=False, instant=False)
    assert measure_baseline([gpu], 1.0, clock, sleep=clock.sleep) == {}


def test_stuck_counter_gives_no_zero_watt_baseline() -> None:
    clock = FakeClock(10.0)
    gpu = ScriptedGpu("GPU-a", clock, constant(80), tick_s=None)
    got = measure_baseline([gpu], 1.0, clock, sleep=clock.sleep)
    assert "GPU-a" not in got or got["GPU-a"].power_w > 0


# ------------------------------------------------------------------------------------ cache


def test_cache_roundtrip(tmp_path: Path) -> None:
    cache = BaselineCache(tmp_path / "cache", ttl_s=600)
    baseline = Baseline("GPU-1234/abc", 81.25, "energy_counter", 5.1, WALL0)
    assert cache.get("GPU-1234/abc") is None
    cache.put(baseline)
    assert cache.get("GPU-1234/abc") == baseline
    # one file per GPU, with a file-safe name
    (path,) = (tmp_path / "cache").iterdir()
    assert path.name == "baseline-GPU-1234_abc.json"
    assert json.loads(path.read_text())["power_w"] == 81.25
    other = Baseline("GPU-other", 60.0, "instant_power_mean", 5.0, WALL0)
    cache.put(other)
    assert cache.get("GPU-other") == other
    assert cache.get("GPU-1234/abc") == baseline


def test_cache_freshness_against_ttl(tmp_path: Path) -> None:
    cache = BaselineCache(tmp_path, ttl_s=600)
    baseline = Baseline("GPU-a", 80.0, "energy_counter", 5.0, WALL0)
    assert cache.is_fresh(baseline, WALL0)
    assert cache.is_fresh(baseline, WALL0 + 600)
    assert not cache.is_fresh(baseline, WALL0 + 600.5)
    assert not cache.is_fresh(baseline, WALL0 - 1)  # from the future: clock went back
    assert not BaselineCache(tmp_path, ttl_s=0).is_fresh(baseline, WALL0 + 1)


@pytest.mark.parametrize(
    "text",
    ["", "{", "[]", '"x"', "3", '{"uuid": "GPU-a"}', '{"uuid": "GPU-a", "bogus": 1}'],
)
def test_corrupt_cache_file_reads_as_none(tmp_path: Path, text: str) -> None:
    cache = BaselineCache(tmp_path, ttl_s=600)
    cache.put(Baseline("GPU-a", 80.0, "energy_counter", 5.0, WALL0))
    (path,) = tmp_path.iterdir()
    path.write_text(text, encoding="utf-8")
    assert cache.get("GPU-a") is None
