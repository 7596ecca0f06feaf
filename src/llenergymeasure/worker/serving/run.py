"""One server-mode experiment: launch the server, then idle baseline, warm-up and each level.

Writes requests-<level>.parquet per level and returns the launch record and every level (a
failed level carries its reason). A failed level never costs another level its result; the
server is stopped however this returns. The server is watched throughout: if it exits (or a
failed level leaves it not answering /health), the level it cut is failed and
ServerStoppedError carries the run so far (the levels before it).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llenergymeasure.config.server import ServerSpec
from llenergymeasure.errors import ServerStoppedError
from llenergymeasure.measure.nvml import GpuReader
from llenergymeasure.results.schema import ServerLevel, ServerRecord
from llenergymeasure.worker.serving.arrivals import send_offsets_s
from llenergymeasure.worker.serving.attribution import attribute, write_parquet
from llenergymeasure.worker.serving.energy import CounterSeries
from llenergymeasure.worker.serving.loadgen import RequestRecord, run_level
from llenergymeasure.worker.serving.metrics import level_metrics
from llenergymeasure.worker.serving.server import launched
from llenergymeasure.worker.serving.window import steady_window

SERVER_LOG = "server.log"


@dataclass
class Load:
    """What every request of the experiment sends."""

    base_url: str
    served_name: str
    prompts: Sequence[str]
    max_tokens: int
    extra_body: Mapping[str, object] = field(default_factory=dict)
    request_timeout_s: float = 300.0
    """Set from the ServerSpec by run_server_experiment, as `alive` from its server."""
    alive: Callable[[], bool] = lambda: True


@dataclass
class ServerRun:
    record: ServerRecord
    e2e_s: list[float]
    """End-to-end latency of every completed request, all levels."""
    level_unix_s: list[tuple[float, float]]
    """Each level's window edges on the wall clock (a failed level: its span)."""


def run_server_experiment(
    spec: ServerSpec,
    command: list[str],
    port: int,
    load: Load,
    out_dir: Path,
    readers: Sequence[GpuReader] = (),
    baseline_s: float = 5.0,
    env: dict[str, str] | None = None,
) -> ServerRun:
    out_dir.mkdir(parents=True, exist_ok=True)
    levels: list[ServerLevel] = []
    e2e: list[float] = []
    edges: list[tuple[float, float]] = []
    with CounterSeries(readers) as counter:
        t_launch = time.monotonic()
        with launched(command, port, spec.startup_timeout_s, out_dir / SERVER_LOG, env) as srv:
            load.base_url = srv.base_url
            load.alive = lambda: srv.proc.poll() is None
            load.request_timeout_s = spec.request_timeout_s
            launch_j = counter.energy_j(t_launch, t_launch + srv.launch_s)
            t_idle = time.monotonic()
            time.sleep(baseline_s)
            idle_s = time.monotonic() - t_idle
            idle_j = counter.energy_j(t_idle, t_idle + idle_s)
            idle_w = idle_j / idle_s if idle_j is not None else None

            def run_so_far() -> ServerRun:
                record = ServerRecord(
                    command=command,
                    pid=srv.proc.pid,
                    launch_s=srv.launch_s,
                    launch_energy_j=launch_j,
                    idle_power_w=idle_w,
                    idle_s=idle_s,
                    warmup_requests=spec.warmup_requests,
                    log_file=SERVER_LOG,
                    levels=levels,
                )
                return ServerRun(record, e2e, edges)

            if spec.warmup_requests:
                asyncio.run(_send(load, offsets_s=[0.0] * spec.warmup_requests))
            if (gone := srv.exit_text()) is not None:
                raise ServerStoppedError(f"{gone} during the warm-up requests")
            for i in range(len(spec.levels)):
                if i:
                    time.sleep(spec.cooldown_s)
                level, recs, unix = _one_level(spec, i, load, counter, idle_w, out_dir)
                gone = srv.exit_text() or (srv.unresponsive() if level.failed else None)
                if gone is not None:
                    reason = (
                        f"{gone} during level {level.level} after {level.requests_sent} requests"
                    )
                    levels.append(
                        level.model_copy(update={"failed": True, "failed_reason": reason})
                    )
                    edges.append(unix)
                    raise ServerStoppedError(reason, run_so_far())
                levels.append(level)
                edges.append(unix)
                if not level.failed:
                    e2e += [r.end_s - r.send_s for r in recs if r.ok and r.end_s is not None]
    return run_so_far()


async def _send(
    load: Load,
    *,
    offsets_s: Sequence[float] | None = None,
    concurrency: int | None = None,
    prompts: Sequence[str] | None = None,
    duration_s: float | None = None,
) -> tuple[float, list[RequestRecord]]:
    return await run_level(
        load.base_url,
        load.served_name,
        prompts if prompts is not None else load.prompts,
        load.max_tokens,
        offsets_s=offsets_s,
        concurrency=concurrency,
        duration_s=duration_s,
        request_timeout_s=load.request_timeout_s,
        extra_body=load.extra_body,
        alive=load.alive,
    )


def _one_level(
    spec: ServerSpec,
    i: int,
    load: Load,
    counter: CounterSeries,
    idle_w: float | None,
    out_dir: Path,
) -> tuple[ServerLevel, list[RequestRecord], tuple[float, float]]:
    level = spec.levels[i]
    n = spec.requests_per_level
    unix_offset = time.time() - time.monotonic()
    if level.rate_rps is not None:
        if n is None:  # bounded by duration: as many as the rate sends in it (inf: one pass)
            assert spec.duration_s is not None
            rate = level.rate_rps
            n = len(load.prompts) if math.isinf(rate) else max(1, math.ceil(rate * spec.duration_s))
        offs = send_offsets_s(spec.arrival, level.rate_rps, n, spec.seed + i, spec.burstiness)
        t0, recs = asyncio.run(_send(load, offsets_s=offs, duration_s=spec.duration_s))
    else:
        pool = [load.prompts[k % len(load.prompts)] for k in range(n or 10**5)]
        t0, recs = asyncio.run(
            _send(load, concurrency=level.concurrency, prompts=pool, duration_s=spec.duration_s)
        )
    window = steady_window(recs)
    energy = None if window is None else counter.energy_j(t0 + window.start_s, t0 + window.end_s)
    m = level_metrics(
        recs,
        window,
        energy,
        spec.slo,
        level.rate_rps,
        spec.max_lag_fraction,
        spec.max_failed_fraction,
    )
    if energy is not None and window is not None and idle_w is not None:
        adjusted = max(0.0, energy - idle_w * window.duration_s)
        m["energy_window_adjusted_j"] = adjusted
        tokens = m.get("window_output_tokens")
        m["energy_adjusted_per_output_token_j"] = adjusted / tokens if tokens else None
    per_req = None
    if energy is not None and window is not None:
        per_req = attribute(recs, counter.power_w(offset=t0), window.start_s, window.end_s, energy)
        m["attributed_energy_sum_j"] = sum(per_req.values())
    requests_file = f"requests-{level.label}.parquet"
    write_parquet(out_dir / requests_file, recs, per_req)
    span = (0.0, max((r.end_s or r.send_s) for r in recs) if recs else 0.0)
    a, b = (window.start_s, window.end_s) if window is not None else span
    result = ServerLevel(level=level.label, level_index=i, requests_file=requests_file, **m)
    return result, recs, (t0 + unix_offset + a, t0 + unix_offset + b)
