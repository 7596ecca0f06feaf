"""Latency statistics of per-request seconds, defined once: a batch window's requests and a
serving level's use the same percentiles, so a p99 means the same in both kinds of result."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llenergymeasure.results.schema import LatencyStats


def latency_stats_of(values_s: Sequence[float]) -> LatencyStats:
    """Mean, p50/p90/p99 (numpy's linear interpolation) and max of a non-empty sequence."""
    latencies = np.array(values_s, dtype=float)
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    return LatencyStats(
        mean_s=float(latencies.mean()),
        p50_s=float(p50),
        p90_s=float(p90),
        p99_s=float(p99),
        max_s=float(latencies.max()),
    )
