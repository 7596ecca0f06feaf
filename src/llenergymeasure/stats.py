"""Intervals and paired tests that keep their stated coverage from a few cycles up.

`mean_ci`: Student t on the mean. Assumes independent values of finite variance: exact for
normal values at any n >= 2, a little conservative for symmetric heavy tails, short for
strongly skewed ones (exponential values: 88% at n = 3, 93% at n = 30); `make bench`
measures each (benchmarks/RESULTS.md).

`ratio_ci`: paired by cycle, Student t on the logs of the per-cycle ratios a_i / b_i of
positive values. A condition both runs of a cycle share (hour, temperature, neighbours)
cancels in each ratio. The ratio is the geometric mean of the per-cycle ratios; its p (is the
ratio 1?) comes from the same t statistic, so the interval excludes 1 exactly when
p < 1 - confidence. Assumes the log ratios are independent across cycles and roughly
symmetric; exact when they are normal.

Two values give the t interval on 1 degree of freedom (at 95%, 12.7 standard errors each side:
valid under the assumptions, and as wide as two values warrant); three are the least a campaign
should rest a claim on. Below two values, or when every value (every log ratio) is the same
up to rounding, there is nothing to estimate a spread from: the interval and p are None (never
a zero-width interval, never p = 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MEAN_METHOD = "Student t"
RATIO_METHOD = "t on log ratios"
Values = Sequence[float] | np.ndarray


def mean_ci(values: Values, confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the Student-t interval of the mean; (mean, None, None) below two
    values or without spread. Raises ValueError for no values."""
    x = np.asarray(values, dtype=float)
    if not len(x):
        raise ValueError("mean_ci needs at least one value")
    centre, half, _ = _t(x, confidence)
    return (centre, None, None) if half is None else (centre, centre - half, centre + half)


def ratio_ci(
    a: Values, b: Values, confidence: float = 0.95
) -> tuple[float, float | None, float | None, float | None]:
    """(ratio, low, high, p) of a against b, paired by position (cycle): the geometric mean
    of a_i / b_i, its t interval and the two-sided p of ratio = 1 (None, None, None below two
    pairs or without spread). Raises ValueError unless a and b are as long and positive."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) != len(y) or not len(x) or not (np.all(x > 0) and np.all(y > 0)):
        raise ValueError("ratio_ci needs two equally long, non-empty series of positive values")
    centre, half, se = _t(np.log(x) - np.log(y), confidence)
    if half is None or se is None:
        return math.exp(centre), None, None, None
    from scipy.special import stdtr

    p = 2.0 * float(stdtr(len(x) - 1, -abs(centre) / se))
    # a finite sample never gives certainty: p only reaches 0 by floating-point underflow
    p = min(1.0, max(p, np.finfo(float).tiny))
    return math.exp(centre), math.exp(centre - half), math.exp(centre + half), p


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (monotone), None kept where there was no test."""
    known = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        adjusted[i] = running
    return adjusted


def _t(x: np.ndarray, confidence: float) -> tuple[float, float | None, float | None]:
    """(mean, half-width, standard error) of the t interval; None, None without a spread."""
    centre = float(x.mean())
    se = float(x.std(ddof=1)) / math.sqrt(len(x)) if len(x) > 1 else 0.0
    if not se > 1e-12 * float(np.abs(x).max()):  # identical up to rounding: no spread
        return centre, None, None
    from scipy.special import stdtrit  # lighter than scipy.stats for a CLI's start

    return centre, float(stdtrit(len(x) - 1, 0.5 + confidence / 2.0)) * se, se
