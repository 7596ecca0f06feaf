"""Per-request energy: the window's energy split by the tokens each request got in each interval.

Model: between consecutive power samples the energy is the trapezoid of power, scaled so the
intervals add up to the window energy from the counter. An interval's energy goes to the requests
by the output tokens they received in it; an interval with no tokens goes to the requests in
flight by their time in it; an interval with neither (idle inside the window) goes to every
window request by its tokens over the window. So the per-request energies sum to the window
energy exactly (to float rounding).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from llenergymeasure.worker.serving.loadgen import RequestRecord
from llenergymeasure.worker.serving.window import chunk_tokens


def attribute(
    records: Sequence[RequestRecord],
    power_w: Sequence[tuple[float, float]],
    start_s: float,
    end_s: float,
    window_energy_j: float,
) -> dict[int, float]:
    """Joules per request index over [start_s, end_s]; power_w is (t_s, W) on the level clock."""
    pts = [(t, w) for t, w in power_w if start_s < t < end_s]
    w0 = _interp(power_w, start_s)
    w1 = _interp(power_w, end_s)
    edges = [(start_s, w0), *pts, (end_s, w1)]
    raw = [(b - a) * (wa + wb) / 2 for (a, wa), (b, wb) in itertools.pairwise(edges)]
    total_raw = sum(raw)
    scale = window_energy_j / total_raw if total_raw > 0 else 0.0
    live = [r for r in records if r.ok]
    out = {r.index: 0.0 for r in live}
    window_tokens = {r.index: 0.0 for r in live}
    idle_j = 0.0
    for ((a, _), (b, _)), e_raw in zip(itertools.pairwise(edges), raw, strict=True):
        e = e_raw * scale
        toks = {}
        for r in live:
            n = sum(1 for t in r.chunk_times_s if a < t <= b) * chunk_tokens(r)
            if n:
                toks[r.index] = n
                window_tokens[r.index] += n
        if toks:
            _split(out, toks, e)
            continue
        overlap = {
            r.index: min(b, r.end_s or b) - max(a, r.send_s)
            for r in live
            if min(b, r.end_s or b) > max(a, r.send_s)
        }
        if overlap:
            _split(out, overlap, e)
        else:
            idle_j += e
    if idle_j:
        weights = {k: v for k, v in window_tokens.items() if v > 0} or dict.fromkeys(out, 1.0)
        _split(out, weights, idle_j)
    return out


def _split(out: dict[int, float], weights: dict[int, float], energy_j: float) -> None:
    total = sum(weights.values())
    for k, w in weights.items():
        out[k] += energy_j * w / total


def _interp(series: Sequence[tuple[float, float]], t: float) -> float:
    if not series:
        return 0.0
    if t <= series[0][0]:
        return series[0][1]
    for (a, wa), (b, wb) in itertools.pairwise(series):
        if a <= t <= b:
            return wa if b == a else wa + (wb - wa) * (t - a) / (b - a)
    return series[-1][1]


def write_parquet(
    path: Path, records: Sequence[RequestRecord], energy_j: dict[int, float] | None
) -> None:
    """One row per request beside result.json; energy_j null when there is no GPU energy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {
        "request": [r.index for r in records],
        "scheduled_s": [r.scheduled_s for r in records],
        "send_s": [r.send_s for r in records],
        "first_token_s": [r.first_token_s for r in records],
        "end_s": [r.end_s for r in records],
        "prompt_tokens": [r.prompt_tokens for r in records],
        "max_tokens": [r.max_tokens for r in records],
        "completion_tokens": [r.completion_tokens for r in records],
        "error": [r.error for r in records],
        "energy_j": [None if energy_j is None else energy_j.get(r.index) for r in records],
    }
    pq.write_table(pa.table(rows), path)
