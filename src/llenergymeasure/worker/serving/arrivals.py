"""Send times for an open-loop level: Poisson, gamma (burstiness = CV) or constant spacing.

Seeded numpy generator, so a level's schedule is reproducible from (seed, level index).
"""

from __future__ import annotations

import math

import numpy as np


def send_offsets_s(
    arrival: str, rate_rps: float, count: int, seed: int, burstiness: float | None = None
) -> list[float]:
    """Offsets from the level's start, first request at 0; rate inf sends all at once."""
    if count <= 0:
        return []
    if math.isinf(rate_rps):
        return [0.0] * count
    if not rate_rps > 0:
        raise ValueError(f"rate_rps must be > 0 or inf, got {rate_rps}")
    mean = 1.0 / rate_rps
    rng = np.random.default_rng(seed)
    if arrival == "constant":
        gaps = np.full(count - 1, mean)
    elif arrival == "poisson":
        gaps = rng.exponential(mean, count - 1)
    elif arrival == "gamma":
        cv = 1.0 if burstiness is None else burstiness
        shape = 1.0 / (cv * cv)
        gaps = rng.gamma(shape, mean / shape, count - 1)
    else:
        raise ValueError(f"unknown arrival {arrival!r}")
    return [0.0, *np.cumsum(gaps).tolist()]
