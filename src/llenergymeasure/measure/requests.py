"""The maths of a server level's requests: their steady-state window (and the MSER-5 check on
it) and the window's energy split over them.

Rule (ML.ENERGY's, generalised from max_num_seqs to the observed plateau): let P be the peak
number of requests in flight and n the number that completed. The window opens when the P-th
first token arrives (the in-flight count has reached its plateau) and closes when the (n - P)-th
request finishes (completions begin to drain). If that leaves nothing, or less than
MIN_STEADY_S (a level that ramps straight into its drain: on the H200 a 4 rps level of 13 s
requests left 0.5 ms, one request end, and read as 5,666 tokens/s), the window is the whole
level, first send to last end, and says so.
MSER-5 on per-second output-token throughput gives an independent truncation point; the window
opening before it is reported, not hidden.

Per-request energy (attribute): between consecutive power samples the energy is the trapezoid
of power, scaled so the intervals add up to the counter's window energy. An interval's energy
goes to the requests by the output tokens they received in it; one with no tokens to the
requests in flight by their time in it; one with neither (idle inside the window) to every
window request by its tokens over the window. So the per-request energies sum to the window
energy exactly (to float rounding).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from llenergymeasure.measure.counter import interp
from llenergymeasure.measure.quality import SHORT_WINDOW_S


@dataclass
class RequestRecord:
    index: int
    scheduled_s: float
    send_s: float = float("nan")
    first_token_s: float | None = None
    end_s: float | None = None
    chunk_times_s: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    max_tokens: int | None = None

    @property
    def lag_s(self) -> float:
        return self.send_s - self.scheduled_s

    @property
    def ok(self) -> bool:
        return self.error is None and self.end_s is not None and self.completion_tokens is not None


MIN_STEADY_S = 1.0
"""Shortest steady state measured as one: below it, rates and energies over the window are
a handful of events and a power reading or two, not a steady state."""


@dataclass(frozen=True)
class SteadyWindow:
    start_s: float
    end_s: float
    level_start_s: float
    level_end_s: float
    peak_in_flight: int
    rule: str
    mser5_truncation_s: float | None

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def coverage(self) -> float:
        span = self.level_end_s - self.level_start_s
        return self.duration_s / span if span > 0 else 0.0

    def warnings(self) -> list[str]:
        out = []
        if self.duration_s < SHORT_WINDOW_S:
            out.append(f"steady-state window {self.duration_s:.2f} s < {SHORT_WINDOW_S:g} s")
        if self.coverage < 0.5:
            out.append(f"steady-state window covers {self.coverage:.0%} of the level (< 50%)")
        if self.mser5_truncation_s is not None and self.start_s < self.mser5_truncation_s:
            out.append(
                f"window opens at {self.start_s:.2f} s, before MSER-5's "
                f"{self.mser5_truncation_s:.2f} s"
            )
        return out


def peak_in_flight(records: Sequence[RequestRecord]) -> int:
    events = sorted(
        [(r.send_s, 1) for r in records if r.ok] + [(r.end_s, -1) for r in records if r.ok],
        key=lambda e: (e[0], e[1]),  # an end before a send at the same instant
    )
    depth = peak = 0
    for _, step in events:
        depth += step
        peak = max(peak, depth)
    return peak


def mser5(series: Sequence[float]) -> int:
    """MSER-5 truncation: index (in raw points) that minimises the marginal standard error."""
    batches = [sum(series[i : i + 5]) / 5 for i in range(0, len(series) - len(series) % 5, 5)]
    n = len(batches)
    if n < 2:
        return 0
    best_d, best = 0, float("inf")
    for d in range(n // 2 + 1):
        tail = batches[d:]
        mean = sum(tail) / len(tail)
        score = sum((x - mean) ** 2 for x in tail) / len(tail) ** 2
        if score < best:
            best_d, best = d, score
    return best_d * 5


def tokens_per_second(
    records: Sequence[RequestRecord], start_s: float, end_s: float
) -> list[float]:
    """Output tokens per one-second bin over [start, end); chunk tokens as in chunk_tokens()."""
    bins = [0.0] * max(1, int(end_s - start_s) + 1)
    for r in records:
        share = chunk_tokens(r)
        for t in r.chunk_times_s:
            k = int(t - start_s)
            if 0 <= k < len(bins):
                bins[k] += share
    return bins


def chunk_tokens(r: RequestRecord) -> float:
    """Tokens per content chunk: the server's completion count spread evenly over its chunks."""
    if not r.ok or not r.chunk_times_s:
        return 0.0
    return (r.completion_tokens or 0) / len(r.chunk_times_s)


def steady_window(records: Sequence[RequestRecord]) -> SteadyWindow | None:
    done = [r for r in records if r.ok and r.first_token_s is not None]
    if not done:
        return None
    level_start = min(r.send_s for r in records)
    level_end = max(r.end_s for r in done if r.end_s is not None)
    p = peak_in_flight(done)
    n = len(done)
    firsts = sorted(r.first_token_s for r in done if r.first_token_s is not None)
    ends = sorted(r.end_s for r in done if r.end_s is not None)
    start, end, rule = level_start, level_end, "whole level (plateau leaves no steady state)"
    if n - p >= 1 and firsts[p - 1] < ends[n - p - 1]:
        steady_s = ends[n - p - 1] - firsts[p - 1]
        if steady_s >= MIN_STEADY_S:
            start, end = firsts[p - 1], ends[n - p - 1]
            rule = f"P-th first token to (n-P)-th end, P={p}, n={n}"
        else:
            rule = (
                f"whole level (steady state P={p}, n={n} lasts {steady_s:.3f} s "
                f"< {MIN_STEADY_S:g} s)"
            )
    series = tokens_per_second(done, level_start, level_end)
    trunc = mser5(series)
    mser_s = level_start + trunc if len(series) >= 10 else None
    return SteadyWindow(start, end, level_start, level_end, p, rule, mser_s)


def attribute(
    records: Sequence[RequestRecord],
    power_w: Sequence[tuple[float, float]],
    start_s: float,
    end_s: float,
    window_energy_j: float,
) -> dict[int, float]:
    """Joules per request index over [start_s, end_s]; power_w is (t_s, W) on the level clock."""
    pts = [(t, w) for t, w in power_w if start_s < t < end_s]
    w0 = interp(power_w, start_s)
    w1 = interp(power_w, end_s)
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
