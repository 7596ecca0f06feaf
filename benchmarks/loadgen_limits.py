"""The load generator's own limits (issue 15.8): against a local stand-in endpoint (no model,
tests/unit/serving_standin.py in a process of its own), the highest open-loop rate at which
the send-time lag p99 stays under 1 ms, and the generator's CPU share at 10 and 100 rps.

Each rate runs `--seconds` of constant arrivals through worker/serving/loadgen.run_level; CPU
share is this process's user + system time over the level's wall time (1.0 = one core).

    python benchmarks/loadgen_limits.py --out benchmarks/results/loadgen_limits.json
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _record import command, describe_machine, machine, now, update_results_md, write_json

from llenergymeasure.worker.serving.arrivals import send_offsets_s
from llenergymeasure.worker.serving.loadgen import run_level
from llenergymeasure.worker.serving.server import free_port, launched

STANDIN = Path(__file__).resolve().parents[1] / "tests" / "unit" / "serving_standin.py"
BUDGET_S = 0.001
RATES = (10, 100, 200, 400, 800, 1600, 3200)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_rate(base_url: str, rate: float, seconds: float) -> dict[str, Any]:
    offsets = send_offsets_s("constant", rate, max(2, int(rate * seconds)), seed=0)
    c0, w0 = cpu_s(), time.monotonic()
    _, records = asyncio.run(run_level(base_url, "standin", ["p"], 4, offsets_s=offsets))
    wall, cpu = time.monotonic() - w0, cpu_s() - c0
    lags = np.array([r.lag_s for r in records])
    return {
        "rate_rps": rate,
        "requests": len(records),
        "failed": sum(1 for r in records if not r.ok),
        "send_lag_p50_ms": float(np.percentile(lags, 50) * 1e3),
        "send_lag_p99_ms": float(np.percentile(lags, 99) * 1e3),
        "cpu_share": cpu / wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("loadgen_limits.json"))
    args = parser.parse_args()
    info = machine()
    port = free_port()
    cmd = [sys.executable, str(STANDIN), str(port), "--tokens", "4"]
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        launched(cmd, port, 30, Path(tmp) / "standin.log") as server,
    ):
        one_rate(server.base_url, 50, 0.5)  # connections and imports warm
        for rate in RATES:
            row = one_rate(server.base_url, rate, args.seconds)
            rows.append(row)
            print(row, flush=True)
            if row["send_lag_p99_ms"] > 100 * BUDGET_S * 1e3 or row["failed"]:
                break
    passing = [r["rate_rps"] for r in rows if r["send_lag_p99_ms"] < BUDGET_S * 1e3]
    data = {
        "machine": info,
        "command": command(),
        "at": now(),
        "budget_ms": BUDGET_S * 1e3,
        "highest_rate_within_budget_rps": max(passing) if passing else None,
        "rates": rows,
    }
    write_json(args.out.name, data)
    table = "\n".join(
        f"| {r['rate_rps']} | {r['requests']} | {r['failed']} | {r['send_lag_p50_ms']:.3f} | "
        f"{r['send_lag_p99_ms']:.3f} | {r['cpu_share']:.2f} |"
        for r in rows
    )
    best = data["highest_rate_within_budget_rps"]
    tried = f"{rows[0]['rate_rps']}-{rows[-1]['rate_rps']} rps"
    verdict = f"{best} rps" if best is not None else f"none of the rates tried ({tried})"
    update_results_md(
        "loadgen_limits",
        f"""## Load generator limits against a stand-in endpoint (issue 15.8)

{describe_machine(info)}; {data["at"]}; `{data["command"]}`. Constant arrivals for
{args.seconds:g} s per rate through `run_level` (httpx, streaming) against
tests/unit/serving_standin.py in its own process on the same cores (4 chunks per request, no
delay). CPU share: the generator's user + system time over wall time (1.0 = one core).

Highest rate with send-lag p99 under {BUDGET_S * 1e3:g} ms: **{verdict}**. On a shared 2-core
machine the p99 is set by how soon the OS runs the generator again after each sleep, not by the
generator's own work (see its CPU share); a level records its own lag and is flagged
`generator_limited` when its p99 passes `server.max_lag_fraction` of the mean inter-arrival time.

| rate (rps) | requests | failed | send lag p50 (ms) | send lag p99 (ms) | CPU share |
|---|---|---|---|---|---|
{table}
""",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
