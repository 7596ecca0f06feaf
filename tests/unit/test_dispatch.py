"""The dispatcher: GPU pinning and concurrency, cycle barriers, gaps with a countdown, and the
thermal floor with injected temperature readings (this machine has no GPU to read)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from llenergymeasure.config.campaign import CampaignConfig, Gaps
from llenergymeasure.config.settings import UserSettings
from llenergymeasure.errors import MeasurementError
from llenergymeasure.measure import temperature
from llenergymeasure.orchestrator.dispatch import Dispatcher, StopRequest, WaitEvents
from llenergymeasure.orchestrator.manifest import ManifestEntry
from llenergymeasure.orchestrator.runners import Job, Outcome
from llenergymeasure.orchestrator.schedule import resolve_execution, run_order
from llenergymeasure.orchestrator.thermal import read_gpu_temperatures, unpinned_gpus

NO_GAPS = Gaps(between_experiments_s=0.0, between_cycles_s=0.0)
WAIT_S = 30.0  # upper bound for a condition that should hold at once; never reached when OK


class GatedRunner:
    """Each run blocks until the test opens its gate (or all gates); records what ran when."""

    name = "gated"
    fresh_container_per_run = False

    def __init__(self, open_all: bool = False) -> None:
        self.cond = threading.Condition()
        self.active: dict[str, tuple[int, ...] | None] = {}
        self.opened: set[str] = set()
        self.open_all = open_all
        self.log: list[tuple[str, str]] = []
        self.interrupted: list[float] = []

    def __enter__(self) -> GatedRunner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def run(self, job: Job) -> Outcome:
        key = str(job.exp_path)
        with self.cond:
            self.active[key] = job.gpus
            self.log.append(("start", key))
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.open_all or key in self.opened, timeout=WAIT_S)
            del self.active[key]
            self.log.append(("end", key))
            self.cond.notify_all()
        return Outcome(returncode=0, timed_out=False, wall_s=0.0)

    def interrupt(self, grace_s: float) -> None:
        """Running workers stop (their gates open); none starts later."""
        with self.cond:
            self.interrupted.append(grace_s)
            self.open_all = True
            self.cond.notify_all()

    def wait_until(self, predicate: Any) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout=WAIT_S), self.active

    def release(self, key: str) -> None:
        with self.cond:
            self.opened.add(key)
            self.cond.notify_all()


class Recorder(WaitEvents):
    def __init__(self) -> None:
        self.waits: list[tuple[str, str, float]] = []
        self.notices: list[str] = []
        self.prepared: list[tuple[str, tuple[int, ...] | None, list[str], float]] = []
        self.completed: list[tuple[str, float]] = []

    def waiting(self, entry: ManifestEntry, reason: str, remaining_s: float) -> None:
        self.waits.append((entry.key, reason, remaining_s))

    def notice(self, message: str) -> None:
        self.notices.append(message)

    def prepare(
        self, entry: ManifestEntry, gpus: tuple[int, ...] | None, warnings: list[str]
    ) -> Job:
        self.prepared.append((entry.key, gpus, warnings, time.monotonic()))
        return Job(
            exp_path=Path(entry.key),
            output_dir=Path(),
            log_path=Path("log"),
            env={},
            timeout_s=60.0,
            gpus=gpus,
        )

    def complete(self, entry: ManifestEntry, job: Job, outcome: Outcome) -> None:
        assert outcome.returncode == 0
        self.completed.append((entry.key, time.monotonic()))


def entries(n: int, cycles: int, order: str = "interleaved") -> list[ManifestEntry]:
    return [
        ManifestEntry(
            experiment_id=f"exp{i}",
            cycle=c,
            backend="pytorch",
            runner="gated",
            exp_path=f"exp{i}/cycle-{c}/exp.json",
        )
        for i, c in run_order(n, cycles, order, 1)  # type: ignore[arg-type]
    ]


def dispatcher(
    runner: GatedRunner,
    recorder: Recorder,
    executor: ThreadPoolExecutor,
    gaps: Gaps = NO_GAPS,
    **kw: Any,
) -> Dispatcher:
    campaign: dict[str, Any] = {"name": "x", "order": kw.pop("order", "interleaved")}
    for key in ("thermal_floor_c", "thermal_floor_max_wait_s"):
        if key in kw:
            campaign[key] = kw.pop(key)
    execution = resolve_execution(CampaignConfig.model_validate(campaign), UserSettings(gaps=gaps))
    return Dispatcher(
        execution=execution,
        runner=runner,
        executor=executor,
        prepare=recorder.prepare,
        complete=recorder.complete,
        events=recorder,
        tick_s=0.05,
        **kw,
    )


def run_in_thread(d: Dispatcher, todo: list[ManifestEntry]) -> threading.Thread:
    thread = threading.Thread(target=d.run, args=(todo,), daemon=True)
    thread.start()
    return thread


# -------------------------------------------------------------------------- gpus, at once


def test_one_experiment_per_gpu_at_a_time_each_pinned() -> None:
    runner, rec = GatedRunner(), Recorder()
    todo = entries(3, 1)
    with ThreadPoolExecutor(max_workers=2) as pool:
        thread = run_in_thread(dispatcher(runner, rec, pool, gpus=(0, 1)), todo)
        runner.wait_until(lambda: len(runner.active) == 2)
        assert sorted(runner.active.values()) == [(0,), (1,)]
        first, second, third = (e.key for e in todo)
        assert third not in runner.active  # both GPUs are busy: the third waits
        gpu_of_second = runner.active[second]
        runner.release(second)
        runner.wait_until(lambda: third in runner.active)
        assert runner.active[third] == gpu_of_second  # it took the GPU that was freed
        runner.release(first)
        runner.release(third)
        thread.join(WAIT_S)
    assert not thread.is_alive()
    assert [k for k, *_ in rec.prepared] == [e.key for e in todo]  # started in manifest order
    assert sorted(k for k, _ in rec.completed) == sorted(e.key for e in todo)


def test_without_gpus_one_at_a_time_unpinned() -> None:
    runner, rec = GatedRunner(open_all=True), Recorder()
    todo = entries(2, 2)
    with ThreadPoolExecutor(max_workers=1) as pool:
        dispatcher(runner, rec, pool).run(todo)
    assert [gpus for _, gpus, _, _ in rec.prepared] == [None] * 4
    # strictly one after another
    assert runner.log == [(kind, e.key) for e in todo for kind in ("start", "end")]


def test_experiments_needing_two_gpus_get_a_disjoint_pair() -> None:
    runner, rec = GatedRunner(), Recorder()
    todo = entries(3, 1)
    needs = {"exp0": 2, "exp1": 1, "exp2": 2}
    with ThreadPoolExecutor(max_workers=3) as pool:
        d = dispatcher(runner, rec, pool, gpus=(4, 5, 6), needs=needs)
        thread = run_in_thread(d, todo)
        runner.wait_until(lambda: len(runner.active) == 2)
        pairs = list(runner.active.values())
        assert sorted(len(p or ()) for p in pairs) == [1, 2]
        used = [g for p in pairs for g in p or ()]
        assert sorted(used) == [4, 5, 6]  # disjoint
        # exp2 needs two GPUs: it starts only once a pair is free
        runner.release(todo[1].key)
        assert todo[2].key not in runner.active
        runner.release(todo[0].key)
        runner.wait_until(lambda: todo[2].key in runner.active)
        assert len(runner.active[todo[2].key] or ()) == 2
        runner.release(todo[2].key)
        thread.join(WAIT_S)
    assert not thread.is_alive()


def test_a_new_cycle_starts_only_after_the_last_one_ended() -> None:
    runner, rec = GatedRunner(open_all=True), Recorder()
    todo = entries(3, 3, "shuffled")
    with ThreadPoolExecutor(max_workers=2) as pool:
        dispatcher(runner, rec, pool, gpus=(0, 1), order="shuffled").run(todo)
    cycle_of = {e.key: e.cycle for e in todo}
    for cycle in (2, 3):
        first_start = min(
            i
            for i, (kind, key) in enumerate(runner.log)
            if kind == "start" and cycle_of[key] == cycle
        )
        last_end_before = max(
            i
            for i, (kind, key) in enumerate(runner.log)
            if kind == "end" and cycle_of[key] == cycle - 1
        )
        assert last_end_before < first_start


def test_grouped_order_has_no_barrier_between_repeats() -> None:
    runner, rec = GatedRunner(), Recorder()
    todo = entries(1, 2, "grouped")  # exp0 cycle 1, exp0 cycle 2
    with ThreadPoolExecutor(max_workers=2) as pool:
        thread = run_in_thread(dispatcher(runner, rec, pool, gpus=(0, 1), order="grouped"), todo)
        runner.wait_until(lambda: len(runner.active) == 2)
        for e in todo:
            runner.release(e.key)
        thread.join(WAIT_S)
    assert not thread.is_alive()


# ---------------------------------------------------------------------- stop and retry


def test_a_stop_request_interrupts_what_runs_and_starts_nothing_more() -> None:
    runner, rec = GatedRunner(), Recorder()
    todo = entries(4, 1)
    stop = StopRequest()
    with ThreadPoolExecutor(max_workers=2) as pool:
        d = dispatcher(runner, rec, pool, gpus=(0, 1), stop=stop, stop_grace_s=7.0)
        thread = run_in_thread(d, todo)
        runner.wait_until(lambda: len(runner.active) == 2)
        stop.reason = "SIGINT"  # what the signal handler does
        thread.join(WAIT_S)
    assert not thread.is_alive()
    assert runner.interrupted == [7.0]
    assert [k for k, *_ in rec.prepared] == [todo[0].key, todo[1].key]
    assert sorted(k for k, _ in rec.completed) == sorted([todo[0].key, todo[1].key])
    assert any("SIGINT: stopping" in n and "after 7 s" in n for n in rec.notices)


def test_a_stop_while_waiting_for_a_gap_ends_at_once() -> None:
    runner = GatedRunner(open_all=True)
    stop = StopRequest()
    gaps = Gaps(between_experiments_s=600.0, between_cycles_s=600.0)

    class StopDuringGap(Recorder):
        def waiting(self, entry: ManifestEntry, reason: str, remaining_s: float) -> None:
            stop.reason = "SIGTERM"

    rec = StopDuringGap()
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:
        dispatcher(runner, rec, pool, gaps=gaps, stop=stop).run(entries(2, 1))
    assert time.monotonic() - t0 < 120  # far below the 600 s gap, whatever the load
    assert len(rec.completed) == 1
    assert runner.interrupted == []  # nothing was running to interrupt


def test_complete_asking_for_a_retry_runs_the_entry_again_next() -> None:
    runner, rec = GatedRunner(open_all=True), Recorder()
    todo = entries(2, 1)
    verdicts = iter([True, True, False, False])  # first entry: two retries

    def complete(entry: ManifestEntry, job: Job, outcome: Outcome) -> bool:
        rec.completed.append((entry.key, time.monotonic()))
        return next(verdicts)

    with ThreadPoolExecutor(max_workers=1) as pool:
        d = dispatcher(runner, rec, pool)
        d.complete = complete
        d.run(todo)
    first, second = (e.key for e in todo)
    assert [k for k, _ in rec.completed] == [first, first, first, second]


# ------------------------------------------------------------------------------------ gaps


def test_gaps_are_waited_with_a_countdown() -> None:
    runner, rec = GatedRunner(open_all=True), Recorder()
    gaps = Gaps(between_experiments_s=0.2, between_cycles_s=0.4)
    todo = entries(2, 2)
    with ThreadPoolExecutor(max_workers=1) as pool:
        dispatcher(runner, rec, pool, gaps=gaps).run(todo)
    starts = [t for *_, t in rec.prepared]
    ends = [t for _, t in rec.completed]
    expected = [0.2, 0.4, 0.2]  # a->b, b->a (new cycle), a->b
    for i, gap in enumerate(expected):
        assert starts[i + 1] - ends[i] >= gap
    reasons = {reason for _, reason, _ in rec.waits}
    assert reasons == {"between experiments gap", "between cycles gap"}
    assert all(0.0 <= remaining <= 0.4 for *_, remaining in rec.waits)
    # the countdown goes down while one entry waits
    first_wait = [r for key, _, r in rec.waits if key == todo[1].key]
    assert first_wait == sorted(first_wait, reverse=True)


def test_gap_skipped_for_fresh_containers_when_opted_in() -> None:
    runner, rec = GatedRunner(open_all=True), Recorder()
    runner.fresh_container_per_run = True
    gaps = Gaps(between_experiments_s=60.0, between_cycles_s=60.0, skip_in_fresh_containers=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        dispatcher(runner, rec, pool, gaps=gaps).run(entries(2, 1))
    assert rec.waits == []
    assert len(rec.completed) == 2


# ---------------------------------------------------------------------------- thermal floor


class Probe:
    """Injected GPU temperature readings, one list per call (the last one repeats)."""

    def __init__(self, readings: list[float] | Exception) -> None:
        self.readings = readings
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, gpus: tuple[int, ...]) -> dict[int, float]:
        self.calls.append(gpus)
        if isinstance(self.readings, Exception):
            raise self.readings
        value = self.readings[min(len(self.calls) - 1, len(self.readings) - 1)]
        return dict.fromkeys(gpus, value)


def test_thermal_floor_waits_until_cool() -> None:
    runner, rec = GatedRunner(open_all=True), Recorder()
    # first call is the pre-flight check; then 70, 60, 49 before the first experiment
    probe = Probe([70.0, 70.0, 60.0, 49.0, 40.0])
    with ThreadPoolExecutor(max_workers=1) as pool:
        d = dispatcher(
            runner, rec, pool, gpus=(2,), thermal_floor_c=50, probe=probe, thermal_poll_s=0.01
        )
        d.run(entries(1, 1))
    assert probe.calls[:4] == [(2,)] * 4
    assert rec.prepared[0][2] == []  # reached: no warning
    floor_waits = [reason for _, reason, _ in rec.waits]
    assert floor_waits[0] == "thermal floor 50 °C (GPU 2 at 70 °C)"
    assert "thermal floor 50 °C (GPU 2 at 60 °C)" in floor_waits


def test_thermal_floor_wait_is_bounded_and_recorded() -> None:
    runner, rec = GatedRunner(open_all=True), Recorder()
    probe = Probe([80.0])
    with ThreadPoolExecutor(max_workers=1) as pool:
        d = dispatcher(
            runner,
            rec,
            pool,
            thermal_floor_c=45,
            thermal_floor_max_wait_s=0.2,
            probe=probe,
            thermal_poll_s=0.05,
        )
        d.run(entries(2, 1))
    for _, _, warnings, _ in rec.prepared:
        assert warnings == [
            "thermal floor 45 °C not reached within 0.2 s (GPU 0 at 80 °C); started anyway"
        ]


def test_thermal_floor_without_nvml_says_it_cannot_be_checked() -> None:
    runner, rec = GatedRunner(open_all=True), Recorder()
    probe = Probe(MeasurementError("NVML: NVML Shared Library Not Found"))
    with ThreadPoolExecutor(max_workers=1) as pool:
        dispatcher(runner, rec, pool, thermal_floor_c=50, probe=probe).run(entries(2, 1))
    assert len(probe.calls) == 1  # asked once, not before every experiment
    (notice,) = rec.notices
    assert "thermal_floor_c is 50 °C but GPU temperature cannot be read" in notice
    assert "NVML Shared Library Not Found" in notice
    assert "the floor cannot be checked" in notice
    for _, _, warnings, _ in rec.prepared:
        assert len(warnings) == 1
        assert warnings[0].startswith("thermal floor 50 °C not checked: ")


@pytest.mark.parametrize("floor", [None, 50.0])
def test_no_probe_without_a_floor_or_when_cool(floor: float | None) -> None:
    runner, rec = GatedRunner(open_all=True), Recorder()
    probe = Probe([30.0])
    kw: dict[str, Any] = {"probe": probe}
    if floor is not None:
        kw["thermal_floor_c"] = floor
    with ThreadPoolExecutor(max_workers=1) as pool:
        dispatcher(runner, rec, pool, **kw).run(entries(2, 1))
    assert (len(probe.calls) > 0) == (floor is not None)
    assert rec.waits == []
    assert all(w == [] for _, _, w, _ in rec.prepared)


# ------------------------------------------------------------------- the real temperature probe


def test_real_probe_reads_nvml_or_says_why_not() -> None:
    """Through the real subprocess: a temperature on a GPU machine, a clear error elsewhere."""
    try:
        readings = read_gpu_temperatures((0,))
    except MeasurementError as e:
        assert "NVML" in str(e)
    else:
        assert set(readings) == {0}
        assert 0 < readings[0] < 120


def test_probe_command_usage() -> None:
    assert temperature.main([]) == 2
    assert temperature.main(["x"]) == 2


def test_unpinned_runs_use_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert unpinned_gpus() == (2, 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234abcd")
    assert unpinned_gpus() == (0,)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert unpinned_gpus() == (0,)
