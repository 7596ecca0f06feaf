"""Whole passes of the prompt set inside one measured window, until it is long enough.

Energy over a window of a few seconds is noisy (counter update period, edge effects) and biased
low, so the worker repeats the same requests until the window reaches `min_window_s`. A pass is
never cut: tokens, requests and energy count over whole passes. Repetition stops early only
when one more pass would run past the experiment's time limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from llenergymeasure.backends.base import RequestOutput

# Keep this share of the time limit free for what follows the window (result, time series).
TIME_LIMIT_SHARE = 0.8


@dataclass
class PassRecord:
    outputs: list[RequestOutput] = field(default_factory=list)
    passes: int = 0
    pass_durations_s: list[float] = field(default_factory=list)
    cut_by_time_limit: bool = False


def fill_window(
    run_pass: Callable[[], list[RequestOutput]],
    min_window_s: float,
    *,
    time_limit_s: float | None = None,
    elapsed_before_s: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
) -> PassRecord:
    """Run `run_pass` once, then again while the window is under `min_window_s` and the next
    pass (assumed as long as the longest so far) still ends inside the time limit."""
    record = PassRecord()
    start = clock()
    while True:
        t0 = clock()
        record.outputs.extend(run_pass())
        record.pass_durations_s.append(clock() - t0)
        record.passes += 1
        window_s = clock() - start
        if window_s >= min_window_s:
            return record
        if time_limit_s is not None:
            next_end = elapsed_before_s + window_s + max(record.pass_durations_s)
            if next_end > TIME_LIMIT_SHARE * time_limit_s:
                record.cut_by_time_limit = True
                return record
