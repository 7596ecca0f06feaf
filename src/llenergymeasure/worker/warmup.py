"""Warm-up before the measured window: a fixed number of full-length runs, then (optionally)
more until run latency settles, so the window does not measure caches, clocks and kernels
coming up to speed."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llenergymeasure.config.experiment import WarmupConfig

log = logging.getLogger("lem.worker")


@dataclass(frozen=True)
class WarmupOutcome:
    latencies_s: list[float]
    converged: bool | None
    """None when no `until_cv` was asked for; else whether the CV fell below it."""
    final_cv: float | None
    """CV of the last `window` latencies (all of them when fewer); None below two runs."""
    duration_s: float

    @property
    def runs(self) -> int:
        return len(self.latencies_s)

    def warnings(self, config: WarmupConfig) -> list[str]:
        """The result's warning for a warm-up that stopped at max_runs without settling."""
        if self.converged is not False:
            return []
        cv = "undefined" if self.final_cv is None else f"{self.final_cv:.3g}"
        return [
            f"warm-up did not converge: latency CV of the last {config.window} runs was {cv} "
            f"after {self.runs} runs (max_runs {config.max_runs}), not below until_cv "
            f"{config.until_cv:g}; the measured window may include warm-up effects"
        ]


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    """Sample std / mean; None for fewer than two values or a zero mean."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean else None


def warm_up(
    run_once: Callable[[], object],
    config: WarmupConfig,
    clock: Callable[[], float] = time.perf_counter,
) -> WarmupOutcome:
    """Call run_once (one full-length, synchronised run) as `config` asks; time each call."""
    latencies: list[float] = []

    def recent_cv() -> float | None:
        recent = latencies if config.until_cv is None else latencies[-config.window :]
        return coefficient_of_variation(recent)

    def settled() -> bool:
        cv = recent_cv()
        assert config.until_cv is not None
        return len(latencies) >= config.window and cv is not None and cv < config.until_cv

    def more() -> bool:
        if len(latencies) < config.runs:
            return True
        return config.until_cv is not None and len(latencies) < config.max_runs and not settled()

    start = clock()
    while more():
        t0 = clock()
        run_once()
        latencies.append(clock() - t0)
        log.info("warm-up run %d: %.3f s", len(latencies), latencies[-1])
    converged = None if config.until_cv is None else settled()
    return WarmupOutcome(latencies, converged, recent_cv(), clock() - start)
