"""The measurement-quality record: every number that says how far a window can be trusted,
gathered in one place with the thresholds that turn a result from 'ok' into 'check'.

The session supplies what it measured (edges, samples, baseline); the worker adds what only it
knows (passes, the warm-up latency ratio). A result marked 'check' is still a result: the
summary flags it, and `reasons` says what to look at.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from llenergymeasure.measure.energy import COUNTER, INTEGRATED_AVERAGE, INTEGRATED_INSTANT
from llenergymeasure.measure.hoststat import HostUsage
from llenergymeasure.results.schema import GpuEnergyRecord, QualityRecord

INTEGRATED = (INTEGRATED_INSTANT, INTEGRATED_AVERAGE, "mixed")
SHORT_WINDOW_S = 10.0
"""The short-window rule: energy over a window under this is noisy and biased low."""
EDGE_UNCERTAINTY_MAX_PCT = 1.0
"""Window edges may cost at most this share of the window's energy (two ~4 ms reads on a 10 s
window are ~0.08%; an edge that never met a counter tick is several %)."""
SAMPLER_COVERAGE_MIN = 0.8
SAMPLER_GAP_MAX_PERIODS = 3.0
"""A gap longer than this many sampler periods can hide a power ramp."""
THROTTLED_SHARE_MAX = 0.05
LATENCY_RATIO_MAX = 1.10
"""Above this the window's batches ran slower than warm-up's: warm-up costs reached the window
(issue 20)."""
HOST_BOUND_BUSY_SHARE = 0.5
"""Below this share of the window with a kernel running (NVML utilisation, the busiest GPU),
the device waited on the host: batch times follow the host CPU's pace (issue 30)."""


@dataclass(frozen=True)
class SampledWindow:
    """The sampler's rows inside the window, for one GPU."""

    times_s: Sequence[float]
    throttled: Sequence[bool | None]
    """Per sample: a slowdown reason was set; None where the GPU did not say."""
    busy_pct: Sequence[float | None] = ()
    """Per sample: NVML utilisation, the share of its period with a kernel running."""


@dataclass(frozen=True)
class MeasuredQuality:
    """What the measurement session knows about its window."""

    window_start_s: float
    window_end_s: float
    per_gpu: Sequence[GpuEnergyRecord] = ()
    energy_method: str | None = None
    counter_periods_s: Sequence[float] = ()
    sampler_hz: float | None = None
    sampled: Sequence[SampledWindow] = ()
    baseline_expected: bool = False
    baseline_source: Literal["measured", "cache"] | None = None
    baseline_age_s: float | None = None
    baseline_state: str | None = None
    baseline_stale: bool | None = None
    short_window: bool | None = None
    host: HostUsage | None = None
    """Steal and this worker's CPU time over the window."""


def assess(
    measured: MeasuredQuality,
    *,
    min_window_s: float,
    passes: int,
    latency_ratio: float | None,
) -> QualityRecord:
    """The quality record of one window, with 'check' and a reason for each item past its
    threshold."""
    reasons: list[str] = []
    window_s = measured.window_end_s - measured.window_start_s
    edge_j, edge_pct = _edge_uncertainty(measured.per_gpu)
    if edge_pct is not None and edge_pct > EDGE_UNCERTAINTY_MAX_PCT:
        reasons.append(
            f"window edges uncertain by {edge_j:.3g} J, {edge_pct:.2f}% of the window's energy "
            f"(over {EDGE_UNCERTAINTY_MAX_PCT:g}%)"
        )
    if any(g.energy_j is None for g in measured.per_gpu):
        reasons.append("energy of the window unknown on some GPU (see measurement_warnings)")
    unsynced = [g.uuid for g in measured.per_gpu if g.method == COUNTER and not g.edge_synced]
    if unsynced:
        reasons.append(
            f"window edges not aligned to an energy-counter update on {', '.join(unsynced)}: "
            "each edge may be off by up to one update period"
        )
    if measured.energy_method in INTEGRATED:
        reasons.append(f"energy from {measured.energy_method}, not the energy counter")
    coverage, gap = _sampler_coverage(measured)
    if coverage is not None and coverage < SAMPLER_COVERAGE_MIN:
        reasons.append(
            f"sampler covered {coverage:.0%} of the window (under {SAMPLER_COVERAGE_MIN:.0%})"
        )
    if gap is not None and measured.sampler_hz:
        limit = SAMPLER_GAP_MAX_PERIODS / measured.sampler_hz
        if gap > limit:
            reasons.append(f"sampler gap of {gap:.2f} s in the window (over {limit:.2f} s)")
    throttled = _throttled_share(measured.sampled)
    if throttled is not None and throttled > THROTTLED_SHARE_MAX:
        reasons.append(f"clocks throttled in {throttled:.0%} of the window's samples")
    if measured.baseline_stale:
        reasons.append(f"idle baseline is stale ({measured.baseline_age_s or 0:.0f} s old)")
    elif measured.baseline_expected and measured.baseline_source is None:
        reasons.append("no idle baseline: adjusted energy is null")
    meets = window_s >= min_window_s
    if not meets:
        reasons.append(f"window of {window_s:.2f} s is under its minimum of {min_window_s:g} s")
    elif measured.short_window:
        reasons.append(
            f"window of {window_s:.2f} s is under {SHORT_WINDOW_S:g} s with min_window_s off"
        )
    busy = _busy_share(measured.sampled)
    host_bound = None if busy is None else busy < HOST_BOUND_BUSY_SHARE
    if host_bound:
        reasons.append(host_bound_reason(busy, measured.host, window_s))
    if latency_ratio is not None and latency_ratio > LATENCY_RATIO_MAX:
        reasons.append(
            f"window batches took {latency_ratio:.2f}x warm-up's (over {LATENCY_RATIO_MAX:.2f})"
        )
    return QualityRecord(
        status="check" if reasons else "ok",
        reasons=reasons,
        counter_update_period_s=max(measured.counter_periods_s, default=None),
        edge_uncertainty_j=edge_j,
        edge_uncertainty_pct=edge_pct,
        sampler_coverage=coverage,
        sampler_largest_gap_s=gap,
        throttled_share=throttled,
        baseline_source=measured.baseline_source,
        baseline_age_s=measured.baseline_age_s,
        baseline_state=measured.baseline_state,
        baseline_stale=measured.baseline_stale,
        window_s=window_s,
        min_window_s=min_window_s,
        window_meets_minimum=meets,
        passes=passes,
        window_to_warmup_latency_ratio=latency_ratio,
        host_steal_s=measured.host.steal_s if measured.host else None,
        host_cpu_s=measured.host.process_cpu_s if measured.host else None,
        gpu_busy_share=busy,
        host_bound=host_bound,
    )


def host_bound_reason(busy: float | None, host: HostUsage | None, window_s: float) -> str:
    """The warning of a host-bound window, with the host figures it rests on."""
    cpu = f"; worker CPU {host.process_cpu_s:.1f} s" if host else ""
    steal = f", steal {host.steal_s:.2f} s" if host and host.steal_s is not None else ""
    return (
        f"host-bound: a GPU kernel ran in {busy or 0:.0%} of the window (under "
        f"{HOST_BOUND_BUSY_SHARE:.0%}), so throughput follows the host CPU's pace, not the GPU's"
        f"{cpu}{steal} over {window_s:.1f} s"
    )


def _edge_uncertainty(per_gpu: Sequence[GpuEnergyRecord]) -> tuple[float | None, float | None]:
    """Each GPU's edge uncertainty (s) times its mean window power; and the share of energy."""
    counted = [
        g
        for g in per_gpu
        if g.energy_j is not None and g.edge_uncertainty_s is not None and g.window_s > 0
    ]
    if not counted or len(counted) < len(per_gpu):
        return None, None
    joules = sum((g.edge_uncertainty_s or 0.0) * (g.energy_j or 0.0) / g.window_s for g in counted)
    total = sum(g.energy_j or 0.0 for g in counted)
    return joules, 100.0 * joules / total if total > 0 else None


def _sampler_coverage(measured: MeasuredQuality) -> tuple[float | None, float | None]:
    """Lowest coverage and longest gap over the GPUs, window edges counted as sample times."""
    window_s = measured.window_end_s - measured.window_start_s
    if not measured.sampled or not measured.sampler_hz or window_s <= 0:
        return None, None
    expected = window_s * measured.sampler_hz
    coverages, gaps = [], []
    for gpu in measured.sampled:
        coverages.append(min(1.0, len(gpu.times_s) / expected) if expected >= 1 else 1.0)
        points = [measured.window_start_s, *sorted(gpu.times_s), measured.window_end_s]
        gaps.append(max(b - a for a, b in itertools.pairwise(points)))
    return min(coverages), max(gaps)


def _busy_share(sampled: Sequence[SampledWindow]) -> float | None:
    """Mean NVML utilisation over the window of the busiest GPU, as a share; None unsampled."""
    means = [
        sum(known) / len(known)
        for g in sampled
        if (known := [b for b in g.busy_pct if b is not None])
    ]
    return max(means) / 100.0 if means else None


def _throttled_share(sampled: Sequence[SampledWindow]) -> float | None:
    known = [t for gpu in sampled for t in gpu.throttled if t is not None]
    return sum(known) / len(known) if known else None
