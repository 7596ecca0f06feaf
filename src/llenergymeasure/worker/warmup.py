"""Warm-up before the measured window: a fixed number of runs, then (optionally) more until run
latency settles, so the window does not measure caches, clocks and kernels coming up to speed.

A run is one pass over batches taken from the window's own (config.warmup.cover): by default
one of each distinct shape, because per-shape start-up (kernel selection, attention plans,
allocator growth) otherwise lands in the window. window_ratio then checks the outcome: the
window's batch latencies over the settled warm-up passes', shape by shape. Both phases run under
the same conditions: the sampler on, the garbage collector paused (see worker/run.py)."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from llenergymeasure.config.experiment import WarmupConfig
from llenergymeasure.measure.quality import LATENCY_RATIO_MAX

log = logging.getLogger("lem.worker")
T = TypeVar("T")
RATIO_WARN = LATENCY_RATIO_MAX
"""Window batches slower than the last warm-up's by more than this: warm-up costs in the window."""
SPREAD_WARN = 0.05
"""Same-shape window batches varying by more than this CV: the pace moved inside the window."""


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


def warmup_batches(batches: Sequence[T], shape: Callable[[T], Hashable], cover: str) -> list[T]:
    """The batches one warm-up pass serves, in window order (see WarmupConfig.cover)."""
    if cover == "batches":
        return list(batches)
    if cover == "first_batch":
        return list(batches[:1])
    seen: set[Hashable] = set()
    picked = []
    for batch in batches:
        if shape(batch) not in seen:
            seen.add(shape(batch))
            picked.append(batch)
    return picked


def reference_passes(passes: Sequence[T], config: WarmupConfig) -> list[T]:
    """The warm-up passes the window is compared with: the settled ones. The first pass pays
    each shape's first-time costs by design, so it is left out when later passes exist; of the
    rest, the last `config.window` (the convergence window), so one noisy batch on a host-bound
    engine does not decide the comparison."""
    settled = list(passes[1:]) if len(passes) > 1 else list(passes)
    return settled[-config.window :]


def window_ratio(
    warm_shapes: Sequence[Hashable],
    warm_passes_s: Sequence[Sequence[float]],
    window_shapes: Sequence[Hashable],
    window_latencies_s: Sequence[float],
) -> float | None:
    """Sum of the window's batch latencies over the sum of their references: per shape, the
    median latency of the batches of that shape in the reference passes (each pass serves
    `warm_shapes` in order), or the median of all of them for a shape no pass warmed. Like is
    compared with like: a shape's own time, in passes run under the window's conditions. None
    without a reference pass or a window batch."""
    by_shape: dict[Hashable, list[float]] = {}
    for latencies in warm_passes_s:
        for shape, latency in zip(warm_shapes, latencies, strict=True):
            by_shape.setdefault(shape, []).append(latency)
    if not by_shape or not window_latencies_s:
        return None
    fallback = statistics.median([x for xs in by_shape.values() for x in xs])
    median = {shape: statistics.median(xs) for shape, xs in by_shape.items()}
    reference = sum(median.get(s, fallback) for s in window_shapes)
    return sum(window_latencies_s) / reference if reference > 0 else None


def ratio_warnings(ratio: float | None) -> list[str]:
    if ratio is None or ratio <= RATIO_WARN:
        return []
    return [
        f"the window's batches took {ratio:.2f}x the settled warm-up passes' (same shapes): "
        f"above {RATIO_WARN:.2f}, so warm-up costs likely reached the window; "
        "raise warmup.runs, set warmup.until_cv or warmup.cover: batches"
    ]


def same_shape_cv(shapes: Sequence[Hashable], latencies_s: Sequence[float]) -> float | None:
    """The largest coefficient of variation of the window's batch latencies among batches of
    one shape (identical work): how much the pace moved inside the window. None when no shape
    ran twice."""
    by_shape: dict[Hashable, list[float]] = {}
    for shape, latency in zip(shapes, latencies_s, strict=True):
        by_shape.setdefault(shape, []).append(latency)
    cvs = [cv for xs in by_shape.values() if (cv := coefficient_of_variation(xs)) is not None]
    return max(cvs) if cvs else None


def spread_warnings(cv: float | None) -> list[str]:
    if cv is None or cv <= SPREAD_WARN:
        return []
    return [
        f"the window's batches of one shape varied with a CV of {cv:.1%} (identical work): the "
        "pace moved inside the window, so its throughput and raw energy carry that much "
        "uncertainty; on a host-bound engine this is the host CPU's speed "
        "(window_batch_host_cpu_s, quality.host_steal_s)"
    ]
