"""One server-mode experiment: launch the server (or wait for server.url's), then idle
baseline, warm-up, each level and the trace, if any, as a level of its own.

Writes requests-<level>.parquet per level and returns the launch record and every level (a
failed level carries its reason). A failed level never costs another level its result; the
server lem launched is stopped however this returns; server.url's is never stopped. The
server is watched throughout: if it exits (or a failed level leaves it not answering its
health check), the level it cut is failed and ServerStoppedError carries the run so far (the
levels before it).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llenergymeasure.config.server import TRACE_LEVEL, ServerSpec
from llenergymeasure.errors import ServerStoppedError
from llenergymeasure.measure.counter import CounterSeries
from llenergymeasure.measure.nvml import GpuReader
from llenergymeasure.measure.requests import RequestRecord, attribute, steady_window
from llenergymeasure.results.schema import GpuProcesses, ServerLevel, ServerRecord
from llenergymeasure.worker.serving.arrivals import send_offsets_s
from llenergymeasure.worker.serving.loadgen import run_level
from llenergymeasure.worker.serving.metrics import level_metrics
from llenergymeasure.worker.serving.server import external, launched, served_model

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
    trace: Trace | None = None


@dataclass(frozen=True)
class Trace:
    """A trace's requests as sent: offsets already scaled by trace_speed."""

    offsets_s: Sequence[float]
    prompts: Sequence[str]
    max_tokens: Sequence[int]


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
    gpus: list[int] | None = None,
) -> ServerRun:
    out_dir.mkdir(parents=True, exist_ok=True)
    levels: list[ServerLevel] = []
    e2e: list[float] = []
    edges: list[tuple[float, float]] = []
    endpoint = (
        launched(command, port, spec.startup_timeout_s, out_dir / SERVER_LOG, env)
        if spec.url is None
        else external(spec.url, spec.startup_timeout_s)
    )
    with CounterSeries(readers) as counter:
        t_launch = time.monotonic()
        with endpoint as srv:
            load.base_url = srv.base_url
            load.request_timeout_s = spec.request_timeout_s
            if srv.proc is not None:
                load.alive = lambda: srv.exit_text() is None
            else:
                load.served_name = served_model(srv.models, [load.served_name], srv.base_url)
            launch_j = counter.energy_j(t_launch, t_launch + srv.launch_s)
            t_idle = time.monotonic()
            time.sleep(baseline_s)
            idle_s = time.monotonic() - t_idle
            idle_j = counter.energy_j(t_idle, t_idle + idle_s)
            idle_w = idle_j / idle_s if idle_j is not None else None
            pids = gpu_pids(readers, {})

            def run_so_far() -> ServerRun:
                record = ServerRecord(
                    command=command if srv.proc is not None else [],
                    pid=srv.pid,
                    launched_by_lem=srv.proc is not None,
                    endpoint=srv.base_url,
                    served_model=load.served_name,
                    gpus=gpus,
                    gpu_processes=[GpuProcesses(gpu=k, pids=sorted(v)) for k, v in pids.items()],
                    launch_s=srv.launch_s,
                    launch_energy_j=launch_j if srv.proc is not None else None,
                    idle_power_w=idle_w,
                    idle_s=idle_s,
                    warmup_requests=spec.warmup_requests,
                    log_file=SERVER_LOG if srv.proc is not None else None,
                    levels=levels,
                )
                return ServerRun(record, e2e, edges)

            if spec.warmup_requests:
                asyncio.run(_send(load, offsets_s=[0.0] * spec.warmup_requests))
            if (gone := srv.exit_text()) is not None:
                raise ServerStoppedError(f"{gone} during the warm-up requests")
            for i in range(len(spec.levels) + (load.trace is not None)):
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
            pids = gpu_pids(readers, pids)
    return run_so_far()


def gpu_pids(readers: Sequence[GpuReader], seen: dict[str, set[int]]) -> dict[str, set[int]]:
    """`seen` and the processes NVML shows on each measured GPU now (by UUID)."""
    return {r.uuid: seen.get(r.uuid, set()) | (r.compute_pids() or set()) for r in readers}


async def _send(
    load: Load,
    *,
    offsets_s: Sequence[float] | None = None,
    concurrency: int | None = None,
    prompts: Sequence[str] | None = None,
    duration_s: float | None = None,
    max_tokens: int | Sequence[int] | None = None,
) -> tuple[float, list[RequestRecord]]:
    return await run_level(
        load.base_url,
        load.served_name,
        prompts if prompts is not None else load.prompts,
        load.max_tokens if max_tokens is None else max_tokens,
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
    unix_offset = time.time() - time.monotonic()
    label, target_rps, (t0, recs) = _traffic(spec, i, load)
    window = steady_window(recs)
    energy = None if window is None else counter.energy_j(t0 + window.start_s, t0 + window.end_s)
    m = level_metrics(
        recs, window, energy, spec.slo, target_rps, spec.max_lag_fraction, spec.max_failed_fraction
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
    requests_file = f"requests-{label}.parquet"
    write_parquet(out_dir / requests_file, recs, per_req)
    span = (0.0, max((r.end_s or r.send_s) for r in recs) if recs else 0.0)
    a, b = (window.start_s, window.end_s) if window is not None else span
    result = ServerLevel(level=label, level_index=i, requests_file=requests_file, **m)
    return result, recs, (t0 + unix_offset + a, t0 + unix_offset + b)


def _traffic(
    spec: ServerSpec, i: int, load: Load
) -> tuple[str, float | None, tuple[float, list[RequestRecord]]]:
    """Level i's label, target rate and sends: spec.levels[i], or past them the trace (its
    target: the scheduled mean rate)."""
    if i == len(spec.levels):
        assert load.trace is not None
        tr = load.trace
        sent = asyncio.run(
            _send(load, offsets_s=tr.offsets_s, prompts=tr.prompts, max_tokens=tr.max_tokens)
        )
        span = tr.offsets_s[-1] - tr.offsets_s[0]
        return TRACE_LEVEL, (len(tr.offsets_s) - 1) / span if span > 0 else None, sent
    level = spec.levels[i]
    n = spec.requests_per_level
    if level.rate_rps is not None:
        if n is None:  # bounded by duration: as many as the rate sends in it (inf: one pass)
            assert spec.duration_s is not None
            rate = level.rate_rps
            n = len(load.prompts) if math.isinf(rate) else max(1, math.ceil(rate * spec.duration_s))
        offs = send_offsets_s(spec.arrival, level.rate_rps, n, spec.seed + i, spec.burstiness)
        return (
            level.label,
            level.rate_rps,
            asyncio.run(_send(load, offsets_s=offs, duration_s=spec.duration_s)),
        )
    pool = [load.prompts[k % len(load.prompts)] for k in range(n or 10**5)]
    sent = asyncio.run(
        _send(load, concurrency=level.concurrency, prompts=pool, duration_s=spec.duration_s)
    )
    return level.label, None, sent


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
