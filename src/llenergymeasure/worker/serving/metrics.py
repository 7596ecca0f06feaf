"""One level's numbers, all counted over its steady-state window (energy and tokens alike).

Output tokens are the chunks that landed inside the window (server counts spread over chunks);
requests (and their input tokens, and goodput) are those that ended inside it, so energy per
request is the window's energy over the requests it completed. (By first token instead, a
closed loop whose window opens once every slot has its first token would count almost none.)
Latencies (TTFT, ITL, E2E) are over the level's completed requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from llenergymeasure.config.server import Slo
from llenergymeasure.measure.requests import RequestRecord, SteadyWindow, chunk_tokens


def _pcts(values: Sequence[float], name: str) -> dict[str, float | None]:
    if not values:
        return {f"{name}_p{p}_s": None for p in (50, 90, 99)}
    arr = np.asarray(values, dtype=float)
    return {f"{name}_p{p}_s": float(np.percentile(arr, p)) for p in (50, 90, 99)}


def meets_slo(r: RequestRecord, slo: Slo) -> bool:
    """Per request: TTFT, its own worst inter-chunk gap and E2E within the bounds."""
    if not r.ok or r.first_token_s is None or r.end_s is None:
        return False
    gaps = np.diff(r.chunk_times_s) if len(r.chunk_times_s) > 1 else np.zeros(1)
    return not (
        (slo.ttft_p99_s is not None and r.first_token_s - r.send_s > slo.ttft_p99_s)
        or (slo.itl_p99_s is not None and float(gaps.max()) > slo.itl_p99_s)
        or (slo.e2e_p99_s is not None and r.end_s - r.send_s > slo.e2e_p99_s)
    )


def level_metrics(
    records: Sequence[RequestRecord],
    window: SteadyWindow | None,
    energy_j: float | None,
    slo: Slo,
    target_rate_rps: float | None,
    max_lag_fraction: float = 0.05,
    max_failed_fraction: float = 0.01,
) -> dict[str, Any]:
    """The level's figures; failed (with counts and reasons) when no request completed or
    more than max_failed_fraction of them failed, its failures in its warnings otherwise."""
    ok = [r for r in records if r.ok]
    out: dict[str, Any] = {
        "requests_sent": len(records),
        "requests_ok": len(ok),
        "requests_failed": len(records) - len(ok),
        "target_rate_rps": target_rate_rps,
    }
    errors = sorted({r.error for r in records if r.error})
    out["errors"] = errors[:5]
    sends = sorted(r.send_s for r in records)
    out["achieved_rate_rps"] = (
        (len(sends) - 1) / (sends[-1] - sends[0])
        if len(sends) > 1 and sends[-1] > sends[0]
        else None
    )
    lags = [r.lag_s for r in records if not math.isnan(r.send_s)]
    out["send_lag_p99_s"] = float(np.percentile(lags, 99)) if lags else None
    # against the level's own mean inter-arrival time: open loop at a finite rate only
    budget_s = max_lag_fraction / target_rate_rps if target_rate_rps else math.inf
    out["generator_limited"] = bool(lags) and out["send_lag_p99_s"] > budget_s
    out |= _pcts([r.first_token_s - r.send_s for r in ok if r.first_token_s is not None], "ttft")
    itl = [float(g) for r in ok for g in np.diff(r.chunk_times_s)]
    out |= _pcts(itl, "itl")
    out |= _pcts([r.end_s - r.send_s for r in ok if r.end_s is not None], "e2e")
    n_failed = out["requests_failed"]
    counted = f"{n_failed} of {len(records)} requests failed ({'; '.join(errors[:3])})"
    warnings: list[str] = [counted] if n_failed else []
    if window is None:
        out |= {"window_s": None, "window_coverage": None, "output_tokens_per_s": None}
        out["warnings"] = ["no request completed: the level failed"]
        out["failed_reason"] = counted if records else "no request was sent"
        out["failed"] = True
        return out
    if n_failed > max_failed_fraction * len(records):
        out["failed"] = True
        out["failed_reason"] = (
            f"{counted}, above server.max_failed_fraction {max_failed_fraction:g}"
        )
        warnings = []
    a, b = window.start_s, window.end_s
    out_tokens = sum(chunk_tokens(r) * sum(1 for t in r.chunk_times_s if a <= t <= b) for r in ok)
    in_window = [r for r in ok if r.end_s is not None and a <= r.end_s <= b]
    in_tokens = sum(r.prompt_tokens or 0 for r in in_window)
    good = [r for r in in_window if meets_slo(r, slo)]
    dur = window.duration_s
    out |= {
        "window_start_s": a,
        "window_end_s": b,
        "window_s": dur,
        "window_coverage": window.coverage,
        "window_rule": window.rule,
        "mser5_truncation_s": window.mser5_truncation_s,
        "peak_in_flight": window.peak_in_flight,
        "window_output_tokens": out_tokens,
        "window_input_tokens": in_tokens,
        "window_requests": len(in_window),
        "output_tokens_per_s": out_tokens / dur if dur > 0 else None,
        "goodput_rps": len(good) / dur if dur > 0 else None,
        "energy_window_j": energy_j,
    }

    def per(n: float) -> float | None:
        return energy_j / n if energy_j is not None and n else None

    out |= {
        "energy_per_output_token_j": per(out_tokens),
        "energy_per_input_token_j": per(in_tokens),
        "energy_per_request_j": per(len(in_window)),
        "energy_per_good_request_j": per(len(good)),
    }
    warnings += window.warnings()
    if out["generator_limited"]:
        warnings.append(
            f"send-lag p99 {out['send_lag_p99_s'] * 1e3:.2f} ms > {max_lag_fraction:.0%} of the "
            f"mean inter-arrival time ({budget_s * 1e3:.2f} ms):"
            " the load generator, not the server, was the limit"
        )
    out["warnings"] = warnings
    return out
