"""One server-mode experiment: launch the server, then idle baseline, warm-up and each level.

Writes levels.json (one entry per level, its failure reason if it failed) and requests-<level>
.parquet beside it. A failed level never costs another level its result; the server is stopped
however this returns.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llenergymeasure.config.server import ServerSpec
from llenergymeasure.errors import BackendError
from llenergymeasure.measure.nvml import GpuReader
from llenergymeasure.worker.serving.arrivals import send_offsets_s
from llenergymeasure.worker.serving.attribution import attribute, write_parquet
from llenergymeasure.worker.serving.energy import CounterSeries
from llenergymeasure.worker.serving.loadgen import run_level
from llenergymeasure.worker.serving.metrics import level_metrics
from llenergymeasure.worker.serving.server import free_port, launched, server_command
from llenergymeasure.worker.serving.window import steady_window


def run_server_experiment(
    spec: ServerSpec,
    backend: str,
    model: str,
    served_name: str,
    prompts: Sequence[str],
    max_tokens: int,
    out_dir: Path,
    readers: Sequence[GpuReader] = (),
    extra_args: list[str] | None = None,
    baseline_s: float = 5.0,
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = server_command(backend, model, port, extra_args)
    result: dict[str, Any] = {"backend": backend, "model": model, "command": cmd, "levels": []}
    with CounterSeries(readers) as counter:
        t_launch = time.monotonic()
        with launched(cmd, port, spec.startup_timeout_s, out_dir / "server.log") as srv:
            result["server_launch_s"] = srv.launch_s
            result["server_launch_energy_j"] = counter.energy_j(t_launch, t_launch + srv.launch_s)
            t_idle = time.monotonic()
            time.sleep(baseline_s)
            idle_j = counter.energy_j(t_idle, time.monotonic())
            idle_w = idle_j / (time.monotonic() - t_idle) if idle_j is not None else None
            result["idle_power_w"] = idle_w
            if spec.warmup_requests:
                asyncio.run(
                    run_level(
                        srv.base_url,
                        served_name,
                        prompts,
                        max_tokens,
                        offsets_s=[0.0] * spec.warmup_requests,
                    )
                )
            for i, _level in enumerate(spec.levels):
                if i:
                    time.sleep(spec.cooldown_s)
                result["levels"].append(
                    _one_level(
                        spec,
                        i,
                        srv.base_url,
                        served_name,
                        prompts,
                        max_tokens,
                        counter,
                        idle_w,
                        out_dir,
                    )
                )
    (out_dir / "levels.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def _one_level(
    spec: ServerSpec,
    i: int,
    base_url: str,
    served_name: str,
    prompts: Sequence[str],
    max_tokens: int,
    counter: CounterSeries,
    idle_w: float | None,
    out_dir: Path,
) -> dict[str, Any]:
    level = spec.levels[i]
    n = spec.requests_per_level or 10**6
    if level.rate_rps is not None:
        count = (
            n
            if spec.requests_per_level
            else max(1, math.ceil(level.rate_rps * (spec.duration_s or 0)))
        )
        if math.isinf(level.rate_rps):
            count = n if spec.requests_per_level else len(prompts)
        offs = send_offsets_s(spec.arrival, level.rate_rps, count, spec.seed + i, spec.burstiness)
        t0, recs = asyncio.run(
            run_level(
                base_url,
                served_name,
                prompts,
                max_tokens,
                offsets_s=offs,
                duration_s=spec.duration_s,
            )
        )
    else:
        pool = [prompts[k % len(prompts)] for k in range(n if spec.requests_per_level else 10**5)]
        t0, recs = asyncio.run(
            run_level(
                base_url,
                served_name,
                pool,
                max_tokens,
                concurrency=level.concurrency,
                duration_s=spec.duration_s,
            )
        )
    window = steady_window(recs)
    energy = None if window is None else counter.energy_j(t0 + window.start_s, t0 + window.end_s)
    m = level_metrics(recs, window, energy, spec.slo, level.rate_rps, spec.lag_budget_s)
    m = {"level": level.label, "level_index": i, **m}
    if energy is not None and window is not None and idle_w is not None:
        m["energy_window_adjusted_j"] = max(0.0, energy - idle_w * window.duration_s)
    per_req = None
    if energy is not None and window is not None:
        per_req = attribute(recs, counter.power_w(offset=t0), window.start_s, window.end_s, energy)
        m["attributed_energy_sum_j"] = sum(per_req.values())
    write_parquet(out_dir / f"requests-{level.label}.parquet", recs, per_req)
    if window is None:
        m["failed"] = True
    return m


__all__ = ["BackendError", "run_server_experiment"]
