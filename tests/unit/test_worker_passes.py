"""Whole passes of the prompt set until the measured window reaches min_window_s."""

from __future__ import annotations

import pytest

from llenergymeasure.backends.base import RequestOutput
from llenergymeasure.worker.passes import fill_window


class PassClock:
    """Seconds advance only while a pass runs: each pass takes `pass_s`."""

    def __init__(self, pass_s: float) -> None:
        self.now, self.pass_s = 0.0, pass_s

    def __call__(self) -> float:
        return self.now

    def run_pass(self) -> list[RequestOutput]:
        self.now += self.pass_s
        return [RequestOutput(input_tokens=8, output_tokens=4, latency_s=self.pass_s)] * 3


@pytest.mark.parametrize(
    ("pass_s", "min_window_s", "time_limit_s", "passes", "cut"),
    [
        (4.2, 10.0, None, 3, False),  # 8.4 s < 10 s -> a third whole pass, never a partial one
        (12.0, 10.0, None, 1, False),  # one pass already long enough
        (4.2, 0.0, None, 1, False),  # off: one pass
        (4.0, 10.0, 3600.0, 3, False),  # limit far away
        (4.0, 10.0, 12.0, 2, True),  # 8 s + 4 s would pass 80 % of the 12 s limit
        (30.0, 40.0, 40.0, 1, True),  # a single pass too long to repeat within the limit
    ],
)
def test_passes_fill_the_window(
    pass_s: float, min_window_s: float, time_limit_s: float | None, passes: int, cut: bool
) -> None:
    clock = PassClock(pass_s)
    record = fill_window(clock.run_pass, min_window_s, time_limit_s=time_limit_s, clock=clock)
    assert (record.passes, record.cut_by_time_limit) == (passes, cut)
    assert len(record.outputs) == 3 * passes  # requests and tokens counted over every pass
    assert record.pass_durations_s == pytest.approx([pass_s] * passes)
