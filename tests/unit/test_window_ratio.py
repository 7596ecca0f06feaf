"""The window-to-warm-up latency ratio compares like with like: each window batch with the
batches of its own shape in the settled warm-up passes (issue 20)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llenergymeasure.config.experiment import WarmupConfig
from llenergymeasure.measure.hoststat import steal_s
from llenergymeasure.worker.warmup import (
    reference_passes,
    same_shape_cv,
    spread_warnings,
    window_ratio,
)

A, B = (32, 73), (32, 61)


@pytest.mark.parametrize(
    ("passes", "runs_kept"),
    [
        (["first"], ["first"]),  # one pass only: it is the reference, costs and all
        (["first", "p2"], ["p2"]),
        (["first", "p2", "p3"], ["p2", "p3"]),
        ([f"p{i}" for i in range(1, 9)], ["p4", "p5", "p6", "p7", "p8"]),  # last window (5)
        ([], []),
    ],
)
def test_reference_is_the_settled_passes(passes: list[str], runs_kept: list[str]) -> None:
    assert reference_passes(passes, WarmupConfig(runs=3)) == runs_kept


def test_ratio_uses_each_shapes_median_over_the_reference_passes() -> None:
    # Shape A took 2.0, 3.0, 2.2 s (median 2.2), shape B 1.0, 1.1, 1.2 s (median 1.1).
    warm = [[2.0, 1.0], [3.0, 1.1], [2.2, 1.2]]
    window_shapes = [A, B, A, B]
    window = [2.2, 1.1, 2.2, 1.1]
    assert window_ratio([A, B], warm, window_shapes, window) == pytest.approx(1.0)
    slower = [x * 1.2 for x in window]
    assert window_ratio([A, B], warm, window_shapes, slower) == pytest.approx(1.2)


def test_a_shape_no_pass_warmed_is_compared_with_the_median_of_all() -> None:
    warm = [[2.0, 1.0], [2.0, 1.0]]  # all batches: median 1.5
    assert window_ratio([A, B], warm, [(8, 5)], [3.0]) == pytest.approx(2.0)


def test_no_reference_or_no_window_gives_no_ratio() -> None:
    assert window_ratio([], [], [A], [1.0]) is None
    assert window_ratio([A], [[1.0]], [], []) is None


def test_spread_is_the_largest_cv_among_batches_of_one_shape() -> None:
    # The H200's 0 Hz cycle-3 window: shape A 2.21, 1.72, 2.41 s; shape B 2.48, 2.45, 1.96 s.
    shapes = [A, B] * 3
    latencies = [2.21, 2.48, 1.72, 2.45, 2.41, 1.96]
    cv = same_shape_cv(shapes, latencies)
    assert cv == pytest.approx(0.1677, abs=1e-3)  # shape A's
    assert "varied with a CV of 16.8%" in spread_warnings(cv)[0]
    assert spread_warnings(0.05) == []
    assert same_shape_cv([A, B], [1.0, 2.0]) is None  # no shape ran twice


def test_steal_is_read_from_the_cpu_line(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    ticks = os.sysconf("SC_CLK_TCK")
    stat.write_text(f"cpu  10 0 5 900 1 0 2 {3 * ticks} 0 0\ncpu0 1 0 1 1 0 0 0 0 0 0\n")
    assert steal_s(stat) == pytest.approx(3.0)
    stat.write_text("cpu  10 0 5\n")  # a kernel that reports no steal field
    assert steal_s(stat) is None
    assert steal_s(tmp_path / "absent") is None
