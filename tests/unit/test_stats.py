"""llenergymeasure.stats against scipy's own t machinery, a case worked by hand, the agreement
of interval and p, and what it does with too little data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from llenergymeasure.stats import holm, mean_ci, ratio_ci

SAMPLES = [(n, confidence) for n in (2, 3, 5, 30) for confidence in (0.8, 0.95, 0.99)]


@pytest.mark.parametrize(("n", "confidence"), SAMPLES)
def test_mean_ci_is_scipys_t_interval(n: int, confidence: float) -> None:
    x = np.random.default_rng(n).normal(10.0, 2.0, n)
    mean, low, high = mean_ci(x, confidence)
    expected = sp.t.interval(confidence, n - 1, loc=x.mean(), scale=sp.sem(x))
    assert mean == pytest.approx(x.mean())
    assert (low, high) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("n", "confidence"), SAMPLES)
def test_ratio_ci_is_a_paired_t_test_on_the_log_ratios(n: int, confidence: float) -> None:
    rng = np.random.default_rng(100 + n)
    b = rng.lognormal(0.0, 0.2, n)
    a = 0.9 * b * rng.lognormal(0.0, 0.05, n)
    ratio, low, high, p = ratio_ci(a, b, confidence)
    logs = np.log(a / b)
    test = sp.ttest_1samp(logs, 0.0)
    interval = sp.t.interval(confidence, n - 1, loc=logs.mean(), scale=sp.sem(logs))
    assert ratio == pytest.approx(math.exp(logs.mean()))
    assert (low, high) == pytest.approx(tuple(math.exp(v) for v in interval), rel=1e-12)
    assert p == pytest.approx(test.pvalue, rel=1e-9)


def test_a_case_worked_by_hand() -> None:
    """Log ratios 0.1, 0.2, 0.3: mean 0.2, sd 0.1, se 0.1/sqrt(3); 2 degrees of freedom,
    whose t has closed forms: quantile (2P-1)/sqrt(2P(1-P)) = 0.95/sqrt(0.04875) = 4.30265
    at P = 0.975, two-sided p = 1 - t/sqrt(t^2 + 2) = 1 - sqrt(12/14) at t = sqrt(12)."""
    b = np.array([2.0, 3.0, 5.0])
    ratio, low, high, p = ratio_ci(b * np.exp([0.1, 0.2, 0.3]), b)
    half = 0.95 / math.sqrt(0.04875) * 0.1 / math.sqrt(3)
    assert ratio == pytest.approx(math.exp(0.2))
    assert (low, high) == pytest.approx((math.exp(0.2 - half), math.exp(0.2 + half)))
    assert (low, high) == pytest.approx((0.95274, 1.56583), abs=1e-5)
    assert p == pytest.approx(1 - math.sqrt(12 / 14)) and p == pytest.approx(0.07418, abs=1e-5)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_the_interval_excludes_1_exactly_when_p_is_below_alpha(confidence: float) -> None:
    rng = np.random.default_rng(7)
    seen = set()
    for trial in range(3000):
        n = int(rng.integers(2, 12))
        b = rng.lognormal(0.0, 0.3, n)
        a = b * rng.lognormal(rng.normal(0.0, 0.05), 0.05, n)
        _, low, high, p = ratio_ci(a, b, confidence)
        assert low is not None and high is not None and p is not None
        excludes = low > 1.0 or high < 1.0
        assert excludes == (p < 1 - confidence), (trial, low, high, p)
        seen.add(excludes)
    assert seen == {True, False}  # both sides were tried


def test_p_is_never_zero_from_a_finite_sample() -> None:
    """Three ratios that agree in sign gave the bootstrap p = 0; t gives what 3 pairs allow."""
    b = np.array([1.0, 1.1, 0.9])
    _, _, _, p = ratio_ci(b * [0.5, 0.51, 0.49], b)
    assert p is not None and 0 < p < 0.01
    _, _, _, p = ratio_ci(b * [0.5, 0.5 + 1e-9, 0.5 - 1e-9], b)
    assert p is not None and p > 0


@pytest.mark.parametrize(
    ("a", "b"), [([1.0], [2.0]), ([0.8, 1.6, 2.4], [1.0, 2.0, 3.0])], ids=["one pair", "no spread"]
)
def test_too_little_to_estimate_a_spread_gives_no_interval_and_no_p(
    a: list[float], b: list[float]
) -> None:
    ratio, low, high, p = ratio_ci(a, b)
    assert ratio == pytest.approx(0.8 if len(a) > 1 else 0.5)
    assert (low, high, p) == (None, None, None)


@pytest.mark.parametrize("values", [[7.0], [2.0, 2.0, 2.0]], ids=["one value", "no spread"])
def test_mean_ci_without_a_spread_has_no_interval(values: list[float]) -> None:
    assert mean_ci(values) == (values[0], None, None)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mean_ci([]), "at least one value"),
        (lambda: ratio_ci([1.0, 2.0], [1.0]), "equally long"),
        (lambda: ratio_ci([1.0, 0.0], [1.0, 1.0]), "positive"),
    ],
    ids=["no values", "unpaired", "not positive"],
)
def test_bad_input_is_refused(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_holm_adjusts_step_down_and_keeps_order() -> None:
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
