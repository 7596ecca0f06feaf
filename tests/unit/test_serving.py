"""Server mode (issue 15): config, arrival schedules, the load generator against a real local
HTTP endpoint, the steady-state window, and per-request energy attribution on scripted power."""

from __future__ import annotations

import asyncio
import itertools
import math
from fractions import Fraction
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from measure_fakes import Trace
from pydantic import ValidationError
from serving_standin import StandIn, standin_server

from llenergymeasure.config.server import ServerSpec
from llenergymeasure.worker.serving.arrivals import send_offsets_s
from llenergymeasure.worker.serving.attribution import attribute, write_parquet
from llenergymeasure.worker.serving.loadgen import RequestRecord, run_level
from llenergymeasure.worker.serving.window import mser5, steady_window


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"levels": [{"rate_rps": 0}], "requests_per_level": 5}, "rate_rps must be > 0"),
        ({"levels": [{"rate_rps": -1}], "requests_per_level": 5}, "rate_rps must be > 0"),
        ({"levels": [{"rate_rps": 1, "concurrency": 2}], "requests_per_level": 5}, "exactly one"),
        ({"levels": [{"rate_rps": 1}]}, "requests_per_level or duration_s"),
        ({"levels": [], "requests_per_level": 5}, "at least 1"),
        ({"levels": [{"rate_rps": 1}], "requests_per_level": 5, "burstiness": 2}, "gamma"),
        ({"levels": [{"rate_rps": 1}], "requests_per_level": 5, "rate": 1}, "Extra inputs"),
    ],
)
def test_server_section_refuses_bad_input(section: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        ServerSpec.model_validate(section)


def test_server_section_accepts_inf_and_concurrency() -> None:
    spec = ServerSpec.model_validate(
        {"levels": [{"rate_rps": "inf"}, {"concurrency": 4}], "duration_s": 5}
    )
    assert math.isinf(spec.levels[0].rate_rps or 0) and spec.levels[1].label == "c4"


@pytest.mark.parametrize(
    ("arrival", "burst"), [("poisson", None), ("gamma", 3.0), ("constant", None)]
)
def test_arrivals_hit_the_rate_and_are_seeded(arrival: str, burst: float | None) -> None:
    offs = send_offsets_s(arrival, 10.0, 4001, seed=7, burstiness=burst)
    assert offs == send_offsets_s(arrival, 10.0, 4001, seed=7, burstiness=burst)
    assert offs[0] == 0 and all(b >= a for a, b in itertools.pairwise(offs))
    assert offs[-1] / 4000 == pytest.approx(0.1, rel=0.1)
    gaps = [b - a for a, b in itertools.pairwise(offs)]
    mean = sum(gaps) / len(gaps)
    cv = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5 / mean
    assert cv == pytest.approx({"poisson": 1.0, "gamma": 3.0, "constant": 0.0}[arrival], abs=0.25)
    assert send_offsets_s(arrival, math.inf, 3, seed=0) == [0.0, 0.0, 0.0]


def test_open_loop_records_ordered_times_and_server_token_counts() -> None:
    standin = StandIn(tokens=5, first_token_s=0.02, gap_s=0.005)
    offs = send_offsets_s("constant", 50.0, 20, seed=0)
    with standin_server(standin) as url:
        _, recs = asyncio.run(run_level(url, "m", ["hi"], 5, offsets_s=offs))
    assert standin.requests == 20 and all(r.ok for r in recs)
    for r in recs:
        assert r.first_token_s is not None and r.end_s is not None
        assert r.send_s < r.first_token_s <= r.chunk_times_s[-1] <= r.end_s
        assert r.first_token_s - r.send_s >= 0.02 and r.completion_tokens == 5
        assert len(r.chunk_times_s) == 5 and r.prompt_tokens == 3
    achieved = (len(recs) - 1) / (recs[-1].send_s - recs[0].send_s)
    assert achieved == pytest.approx(50.0, rel=0.1)
    assert max(r.lag_s for r in recs) < 0.05


def test_closed_loop_keeps_concurrency_and_duration_bounds_the_level() -> None:
    standin = StandIn(tokens=3, gap_s=0.01)
    with standin_server(standin) as url:
        _, recs = asyncio.run(run_level(url, "m", ["p"] * 400, 3, concurrency=4, duration_s=0.5))
    assert 4 <= len(recs) < 400 and all(r.ok for r in recs)
    assert max(r.send_s for r in recs) <= 0.5 + 0.05
    w = steady_window(recs)
    assert w is not None and w.peak_in_flight == 4


def test_failing_server_fails_every_request_with_its_reason() -> None:
    with standin_server(StandIn(status=500)) as url:
        _, recs = asyncio.run(run_level(url, "m", ["p"], 3, offsets_s=[0.0, 0.0]))
    assert all(not r.ok and "HTTP 500" in (r.error or "") for r in recs)
    assert steady_window(recs) is None


def test_unreachable_server_is_an_error_not_a_hang() -> None:
    _, recs = asyncio.run(run_level("http://127.0.0.1:9", "m", ["p"], 3, offsets_s=[0.0]))
    assert recs[0].error and "Connect" in recs[0].error


def _req(i: int, send: float, first: float, gap: float, n: int) -> RequestRecord:
    chunks = [first + k * gap for k in range(n)]
    return RequestRecord(i, send, send, first, chunks[-1], chunks, 3, n)


def test_window_rule_opens_at_plateau_and_closes_at_drain() -> None:
    # 4 concurrent streams started together, each replaced when it ends: plateau P = 4.
    recs = [_req(i, (i // 4) * 1.0, (i // 4) * 1.0 + 0.1, 0.1, 9) for i in range(40)]
    w = steady_window(recs)
    assert w is not None and w.peak_in_flight == 4
    assert w.start_s == pytest.approx(0.1) and w.end_s == pytest.approx(8.9)
    assert w.level_start_s <= w.start_s < w.end_s <= w.level_end_s
    assert "10 s" in " ".join(w.warnings())


def test_mser5_cuts_a_ramp() -> None:
    series = [float(k) for k in range(10)] + [10.0] * 40
    assert 5 <= mser5(series) <= 10


def test_attribution_sums_to_window_energy_and_follows_tokens() -> None:
    # Power from the scripted trace used for NVML fakes: 100 W rising to 300 W over 10 s.
    trace = Trace([(0, 100), (10, 300)])
    power = [(t / 10, float(trace.power(Fraction(t, 10)))) for t in range(0, 101)]
    recs = [_req(0, 0.0, 1.0, 0.5, 17), _req(1, 0.0, 1.0, 1.0, 9), _req(2, 2.0, 2.5, 0.0, 1)]
    recs.append(RequestRecord(3, 0.0, 0.0, error="HTTP 500"))
    window_j = 2000.0
    energy = attribute(recs, power, 1.0, 9.0, window_j)
    assert set(energy) == {0, 1, 2}
    assert sum(energy.values()) == pytest.approx(window_j, rel=1e-12)
    assert energy[0] > energy[1] > energy[2] > 0  # 17 tokens > 9 tokens > 1 token


def test_attribution_parquet_beside_result(tmp_path: Path) -> None:
    recs = [_req(0, 0.0, 0.5, 0.1, 3), RequestRecord(1, 0.0, 0.0, error="boom")]
    write_parquet(tmp_path / "requests.parquet", recs, None)
    table = pq.read_table(tmp_path / "requests.parquet").to_pydict()
    assert table["completion_tokens"] == [3, None] and table["energy_j"] == [None, None]
    assert table["error"] == [None, "boom"]
