"""Warm-up: the config's rules and when warm_up stops, with latencies injected by a clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from llenergymeasure.config.experiment import ExperimentConfig, WarmupConfig
from llenergymeasure.worker.warmup import coefficient_of_variation, warm_up


class ScriptedClock:
    """A clock where each run_once call takes the next of the given durations."""

    def __init__(self, durations: list[float]) -> None:
        self.now = 0.0
        self.durations: Iterator[float] = iter(durations)
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def run_once(self) -> None:
        self.calls += 1
        self.now += next(self.durations)


def run(durations: list[float], **config: Any) -> tuple[ScriptedClock, Any]:
    clock = ScriptedClock(durations)
    outcome = warm_up(clock.run_once, WarmupConfig.model_validate(config), clock=clock)
    return clock, outcome


def test_fixed_runs_only() -> None:
    clock, outcome = run([1.0, 2.0, 3.0, 99.0], runs=3)
    assert clock.calls == 3
    assert outcome.latencies_s == [1.0, 2.0, 3.0]
    assert outcome.runs == 3
    assert outcome.converged is None
    assert outcome.final_cv == pytest.approx(0.5)  # std 1 / mean 2, over all runs
    assert outcome.duration_s == pytest.approx(6.0)
    assert outcome.warnings(WarmupConfig(runs=3)) == []


def test_no_runs() -> None:
    clock, outcome = run([], runs=0)
    assert clock.calls == 0
    assert (outcome.runs, outcome.converged, outcome.final_cv) == (0, None, None)


def test_continues_until_the_window_settles() -> None:
    # first runs are slow (cold), then steady: the last 3 of [.., 1.0, 1.01, 0.99] have CV ~1%
    durations = [5.0, 3.0, 1.5, 1.0, 1.01, 0.99, 1.0, 1.0]
    config = {"runs": 2, "until_cv": 0.02, "window": 3, "max_runs": 20}
    clock, outcome = run(durations, **config)
    assert clock.calls == 6
    assert outcome.converged is True
    assert outcome.final_cv == pytest.approx(coefficient_of_variation([1.0, 1.01, 0.99]))
    assert outcome.final_cv < 0.02
    assert outcome.warnings(WarmupConfig.model_validate(config)) == []


def test_fixed_runs_come_first_even_when_already_settled() -> None:
    clock, outcome = run([1.0] * 10, runs=6, until_cv=0.05, window=2, max_runs=10)
    assert clock.calls == 6
    assert outcome.converged is True


def test_needs_a_full_window_before_judging() -> None:
    clock, outcome = run([1.0] * 10, runs=0, until_cv=0.05, window=4, max_runs=10)
    assert clock.calls == 4
    assert outcome.converged is True


def test_stops_at_max_runs_and_warns() -> None:
    durations = [1.0, 2.0] * 10
    config = WarmupConfig(runs=1, until_cv=0.05, window=2, max_runs=7)
    clock = ScriptedClock(durations)
    outcome = warm_up(clock.run_once, config, clock=clock)
    assert clock.calls == 7
    assert outcome.converged is False
    (warning,) = outcome.warnings(config)
    assert "did not converge" in warning
    assert "after 7 runs" in warning
    assert "until_cv 0.05" in warning
    assert f"{outcome.final_cv:.3g}" in warning


def test_coefficient_of_variation() -> None:
    assert coefficient_of_variation([]) is None
    assert coefficient_of_variation([3.0]) is None
    assert coefficient_of_variation([0.0, 0.0]) is None
    assert coefficient_of_variation([2.0, 2.0]) == 0.0
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(2**0.5 / 2)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"runs": -1}, "greater than or equal to 0"),
        ({"until_cv": 0}, "greater than 0"),
        ({"until_cv": 1.0}, "less than 1"),
        ({"until_cv": 0.1, "window": 1}, "greater than or equal to 2"),
        ({"until_cv": 0.1, "runs": 30}, "max_runs (20) must be at least runs and window (30)"),
        ({"until_cv": 0.1, "window": 21}, "must be at least runs and window (21)"),
        ({"max_runs": 10}, "max_runs only apply with `until_cv`"),
        ({"window": 3, "max_runs": 10}, "max_runs and window only apply with `until_cv`"),
        ({"runs": True}, "valid integer"),
    ],
)
def test_warmup_config_rejects(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        ExperimentConfig.model_validate({"warmup": data})
    assert fragment in str(info.value)
    assert info.value.errors()[0]["loc"][0] == "warmup"


def test_warmup_config_accepts_bounds() -> None:
    w = WarmupConfig.model_validate({"runs": 2, "until_cv": 0.01, "max_runs": 2, "window": 2})
    assert (w.runs, w.until_cv, w.max_runs, w.window) == (2, 0.01, 2, 2)
    assert WarmupConfig.model_validate({"runs": 1000}).runs == 1000
