"""Window energy from scripted GPUs: counter edges synced to ticks, the integration fallback.

Every expected value is worked out by hand from the scripted trace (see measure_fakes): a
counter ticking every 100 ms, 4 ms per counter read, the value as of the end of each read.
"""

from __future__ import annotations

import pytest
from measure_fakes import FakeClock, ScriptedGpu, Trace, constant, q

from llenergymeasure.measure.energy import (
    COUNTER,
    INTEGRATED_AVERAGE,
    INTEGRATED_INSTANT,
    CounterRead,
    integrate_power,
    read_synced,
    window_energy,
)

OFFSET = 7_000_000_000  # mJ on the counter since "driver load"


def exact(value: float) -> object:
    return pytest.approx(value, rel=1e-12, abs=1e-12)


# ------------------------------------------------------------------------------ read_synced


def test_read_synced_returns_the_first_value_after_a_tick() -> None:
    clock = FakeClock(1.0523)
    gpu = ScriptedGpu("GPU-a", clock, constant(250))
    reads = read_synced([gpu], clock)
    # first read ends at 1.0563 (counter as of the 1.0 tick); reads then end every 4 ms:
    # 1.0603, ..., 1.0963, 1.1003, and the one ending at 1.1003 is the first to see the 1.1 tick
    read = reads["GPU-a"]
    assert read.energy_mj == OFFSET + 250 * 1100  # 250 W * 1.1 s, in mJ
    assert read.t_s == exact(1.1003)
    assert read.synced is True
    assert read.gap_s == exact(0.004)  # the tick lies within one read interval
    assert read.t_s - read.gap_s < 1.1 <= read.t_s
    assert gpu.energy_calls == 12  # 1 first read + 11 until the tick
    assert clock() == exact(1.1003)


def test_read_synced_on_a_tick_boundary_phase() -> None:
    # reads end exactly on 4 ms multiples, so one ends exactly at the tick: it sees the tick
    clock = FakeClock(2.0)
    gpu = ScriptedGpu("GPU-a", clock, constant(100))
    read = read_synced([gpu], clock)["GPU-a"]
    assert read.t_s == exact(2.1)
    assert read.energy_mj == OFFSET + 100 * 2100
    assert (read.synced, read.gap_s) == (True, exact(0.004))


def test_read_synced_counter_that_never_ticks_times_out_unsynced() -> None:
    clock = FakeClock(1.0523)
    gpu = ScriptedGpu("GPU-a", clock, constant(250), tick_s=None)
    read = read_synced([gpu], clock, max_wait_s=0.3)["GPU-a"]
    assert read.synced is False
    assert read.energy_mj == OFFSET  # the value it kept reading
    # the wait starts after the first read (1.0563) and gives up on the first pass past it
    assert 1.0563 + 0.3 <= read.t_s <= 1.0563 + 0.3 + 2 * 0.004 + 1e-9
    assert read.gap_s == exact(0.004)


def test_read_synced_omits_unsupported_counters() -> None:
    clock = FakeClock(5.0)
    none = ScriptedGpu("GPU-none", clock, constant(100), counter=False)
    assert read_synced([none], clock) == {}
    assert none.energy_calls == 1  # asked once, not polled
    ok = ScriptedGpu("GPU-ok", clock, constant(100))
    reads = read_synced([none, ok], clock)
    assert set(reads) == {"GPU-ok"}
    assert none.energy_calls == 2


def test_read_synced_several_gpus_each_synced_to_its_own_tick() -> None:
    clock = FakeClock(1.0523)
    a = ScriptedGpu("GPU-a", clock, constant(300))
    b = ScriptedGpu("GPU-b", clock, constant(200), tick_phase_s=0.05)  # ticks at x.x5
    reads = read_synced([a, b], clock)
    # first reads end at 1.0563 (a) and 1.0603 (b); then a, b alternate, 8 ms per GPU:
    # a's reads end 1.0643, ..., 1.0963, 1.1043 -> first after a's 1.1 tick, gap 8 ms.
    # b's reads end 1.0683, ..., 1.1083, then b alone every 4 ms: 1.1123, ..., 1.1523 is the
    # first after b's 1.15 tick, gap 4 ms.
    assert reads["GPU-a"] == CounterRead(
        reads["GPU-a"].t_s, OFFSET + 300 * 1100, True, reads["GPU-a"].gap_s
    )
    assert reads["GPU-a"].t_s == exact(1.1043)
    assert reads["GPU-a"].gap_s == exact(0.008)
    assert reads["GPU-b"].energy_mj == OFFSET + 200 * 1150
    assert reads["GPU-b"].t_s == exact(1.1523)
    assert reads["GPU-b"].gap_s == exact(0.004)
    assert reads["GPU-b"].synced is True
    for read, tick in ((reads["GPU-a"], 1.1), (reads["GPU-b"], 1.15)):
        assert read.t_s - read.gap_s < tick <= read.t_s


def test_read_synced_logs_instant_power_only_when_asked() -> None:
    ramp = Trace([(1.0, 100), (2.0, 200)])  # 100 W + 100 W/s
    clock = FakeClock(1.0523)
    gpu = ScriptedGpu("GPU-a", clock, ramp)
    assert read_synced([gpu], clock)["GPU-a"].power_log == ()

    clock = FakeClock(1.0523)
    gpu = ScriptedGpu("GPU-a", clock, ramp)
    read = read_synced([gpu], clock, log_power=True)["GPU-a"]
    # instant power is read just before each of the 12 counter reads: 1.0523, 1.0563, ...,
    # 1.0963 (reads are 4 ms, instant power free); the tick is still seen at 1.1003
    assert read.t_s == exact(1.1003)
    assert [t for t, _ in read.power_log] == [exact(1.0523 + 0.004 * i) for i in range(12)]
    assert [p for _, p in read.power_log] == [exact(105.23 + 0.4 * i) for i in range(12)]


# -------------------------------------------------------------------------- integrate_power


def test_integrate_constant_power_is_p_times_t() -> None:
    samples = [(t / 10, 300.0) for t in range(11)]
    assert integrate_power(samples, 0.2, 0.7) == exact(150.0)
    assert integrate_power(samples, 0.0, 1.0) == exact(300.0)
    # edges between samples, and irregular sample times
    irregular = [(0.0, 42.0), (0.13, 42.0), (0.5, 42.0), (0.51, 42.0), (2.0, 42.0)]
    assert integrate_power(irregular, 0.05, 1.95) == exact(42.0 * 1.9)


def test_integrate_ramp_is_the_exact_trapezoid() -> None:
    ramp = [(float(t), 100.0 + 50.0 * t) for t in range(11)]  # P = 100 + 50 t
    # integral of 100 + 50 t over [2, 6] = 100*4 + 25*(36 - 4)
    assert integrate_power(ramp, 2.0, 6.0) == exact(1200.0)
    # window edges between samples: interpolated, still exact for a ramp
    # 100*3.75 + 25*(6.25**2 - 2.5**2) = 375 + 820.3125
    assert integrate_power(ramp, 2.5, 6.25) == exact(1195.3125)


def test_integrate_step_between_samples_is_averaged_over_the_sample_gap() -> None:
    step = [(0.0, 100.0), (1.0, 100.0), (2.0, 400.0), (3.0, 400.0)]
    # the step happened somewhere in (1, 2): the trapezoid charges (100 + 400) / 2 there
    assert integrate_power(step, 0.0, 3.0) == exact(100.0 + 250.0 + 400.0)
    # a step caught at both sides of one instant is exact
    sharp = [(0.0, 100.0), (1.0, 100.0), (1.0, 400.0), (3.0, 400.0)]
    assert integrate_power(sharp, 0.0, 3.0) == exact(100.0 + 800.0)


def test_integrate_interpolates_edges_between_samples() -> None:
    peak = [(0.0, 100.0), (1.0, 300.0), (2.0, 100.0)]
    # p(0.5) = p(1.5) = 200: (0.5, 200) (1, 300) (1.5, 200) -> 0.5*250 + 0.5*250
    assert integrate_power(peak, 0.5, 1.5) == exact(250.0)


def test_integrate_holds_the_nearest_sample_outside_the_samples() -> None:
    assert integrate_power([(1.0, 200.0), (2.0, 200.0)], 0.0, 3.0) == exact(600.0)
    # (0,100) held, (1,100), (2,300), (3,300) held: 100 + 200 + 300
    assert integrate_power([(2.0, 300.0), (1.0, 100.0)], 0.0, 3.0) == exact(600.0)  # unsorted


def test_integrate_needs_two_samples_and_a_positive_window() -> None:
    assert integrate_power([], 0.0, 1.0) is None
    assert integrate_power([(0.5, 100.0)], 0.0, 1.0) is None
    assert integrate_power([(0.0, 100.0), (1.0, 100.0)], 1.0, 1.0) is None
    assert integrate_power([(0.0, 100.0), (1.0, 100.0)], 1.0, 0.5) is None


# ---------------------------------------------------------------------------- window_energy


def test_window_energy_counter_path() -> None:
    warnings: list[str] = []
    start = CounterRead(10.0043, 1_000_000, True, 0.004)
    end = CounterRead(22.1083, 4_648_000, True, 0.008)
    got = window_energy("GPU-a", start, end, 10.005, 22.0, [], [], warnings)
    assert got.uuid == "GPU-a"
    assert got.method == COUNTER
    assert got.energy_j == exact(3648.0)  # (4_648_000 - 1_000_000) mJ
    assert got.window_s == exact(12.104)  # tick to tick, not the caller's edges
    assert got.edge_synced is True
    assert got.edge_uncertainty_s == exact(0.012)
    assert warnings == []


def test_window_energy_counter_unsynced_edge_is_reported() -> None:
    start = CounterRead(1.0, 1000, False, 0.004)
    end = CounterRead(2.0, 3000, True, 0.004)
    got = window_energy("GPU-a", start, end, 1.0, 2.0, [], [], [])
    assert (got.method, got.energy_j, got.edge_synced) == (COUNTER, 2.0, False)


def test_window_energy_backwards_counter_falls_back_to_integration() -> None:
    warnings: list[str] = []
    start = CounterRead(10.0, 9_000_000, True, 0.004)
    end = CounterRead(20.0, 1_000, True, 0.004)  # driver reload: the counter restarted
    instant = [(9.5 + 0.1 * i, 300.0) for i in range(120)]
    got = window_energy("GPU-a", start, end, 10.0, 20.0, instant, [], warnings)
    assert got.method == INTEGRATED_INSTANT
    assert got.energy_j == exact(3000.0)
    assert got.window_s == exact(10.0)
    assert got.edge_synced is False
    assert got.edge_uncertainty_s is None
    assert len(warnings) == 1
    assert "went backwards" in warnings[0]
    assert "GPU-a" in warnings[0]


def test_window_energy_unsupported_counter_uses_instant_then_average_power() -> None:
    ramp = [(float(t), 100.0 + 10.0 * t) for t in range(0, 21)]
    flat = [(float(t), 150.0) for t in range(0, 21)]
    warnings: list[str] = []
    got = window_energy("GPU-a", None, None, 4.0, 8.0, ramp, flat, warnings)
    # 100*4 + 5*(64 - 16)
    assert (got.method, got.energy_j) == (INTEGRATED_INSTANT, exact(640.0))
    assert len(warnings) == 1
    assert "not supported" in warnings[0]

    warnings = []
    got = window_energy("GPU-a", None, None, 4.0, 8.0, [(5.0, 999.0)], flat, warnings)
    assert (got.method, got.energy_j) == (INTEGRATED_AVERAGE, exact(600.0))
    assert got.window_s == exact(4.0)

    # a start read but no end read counts as unsupported too
    got = window_energy("GPU-a", CounterRead(4.0, 1, True), None, 4.0, 8.0, [], flat, [])
    assert got.method == INTEGRATED_AVERAGE


def test_window_energy_nothing_to_go_on_is_null_with_a_warning() -> None:
    warnings: list[str] = []
    got = window_energy("GPU-a", None, None, 4.0, 8.0, [], [(5.0, 100.0)], warnings)
    assert got.energy_j is None
    assert got.method is None
    assert got.window_s == exact(4.0)
    assert got.edge_synced is False
    assert len(warnings) == 2
    assert "too few power samples" in warnings[1]


def test_window_energy_removes_the_tail_after_the_window_end() -> None:
    # counter 10.0 -> 22.1 tick (E over that span 3648 J); the window ended at 22.0;
    # instant power logged meanwhile: 200 W flat from 22.0 on, end tick seen at 22.1043
    start = CounterRead(10.0043, 1_000_000, True, 0.004)
    log = tuple((22.0 + 0.004 * i, 200.0) for i in range(26))
    end = CounterRead(22.1043, 4_648_000, True, 0.004, log)
    warnings: list[str] = []
    got = window_energy("GPU-a", start, end, 10.005, 22.0, [], [], warnings)
    assert got.method == COUNTER
    assert got.energy_j == exact(3648.0 - 200.0 * 0.1043)
    assert got.window_s == exact(22.0 - 10.0043)  # from the start read to the window end
    assert got.edge_uncertainty_s == exact(0.008)
    assert warnings == []


def test_window_energy_tail_of_a_ramp_and_of_a_single_reading() -> None:
    start = CounterRead(0.0, 0, True, 0.004)
    # power falling 300 -> 100 W over the tail, logged from 5.01; held back to 5.0
    ramp = ((5.01, 300.0), (5.05, 200.0), (5.09, 100.0))
    end = CounterRead(5.1, 1_500_000, True, 0.004, ramp)
    got = window_energy("GPU-a", start, end, 0.0, 5.0, [], [], [])
    # tail: 0.01*300 + 0.04*250 + 0.04*150 + 0.01*100 = 20 J
    assert got.energy_j == exact(1500.0 - 20.0)
    assert got.window_s == exact(5.0)
    one = CounterRead(5.1, 1_500_000, True, 0.004, ((5.02, 150.0),))
    assert window_energy("GPU-a", start, one, 0.0, 5.0, [], [], []).energy_j == exact(1485.0)


def test_window_energy_without_a_power_log_ends_at_the_tick() -> None:
    start = CounterRead(0.0043, 0, True, 0.004)
    end = CounterRead(5.1043, 1_530_000, True, 0.004)  # no instant power logged
    got = window_energy("GPU-a", start, end, 0.01, 5.0, [], [], [])
    assert got.energy_j == exact(1530.0)
    assert got.window_s == exact(5.1)


def test_window_energy_never_reports_negative_energy_from_a_stuck_counter() -> None:
    clock = FakeClock(10.0)
    gpu = ScriptedGpu("GPU-a", clock, constant(250), tick_s=None)
    start = read_synced([gpu], clock)["GPU-a"]
    t_start = clock()
    clock.advance(5.0)
    t_end = clock()
    end = read_synced([gpu], clock, log_power=True)["GPU-a"]
    assert not start.synced and not end.synced
    got = window_energy("GPU-a", start, end, t_start, t_end, [], [], [])
    assert got.energy_j is None or got.energy_j > 0


# ------------------------------------------------- the fakes themselves (so the above is honest)


def test_trace_energy_is_exact() -> None:
    trace = Trace([(0, 80), (107.5, 80), (107.5, 400), (119, 400), (119, 80)])
    assert trace.energy_j("107.3", "119.4") == q(16) + q(4600) + q(32)
    ramp = Trace([(0, 100), (10, 200)])
    assert ramp.energy_j(2, 6) == q(400) + q(5) * (36 - 4)
    assert ramp.energy_j(-1, 0) == 100
    assert ramp.energy_j(10, 12) == 400
