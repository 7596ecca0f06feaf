"""The measured window for one experiment cycle.

Order matters: pre-flight -> load + engine init (timed, outside the window) -> prompts
tokenised and batched -> idle baseline -> sampler on -> warm-up over the window's own batch
shapes -> synchronise -> GC collect, then paused -> energy start (at a counter tick) -> serve
the prepared batches, in whole passes until the window reaches min_window_s -> synchronise ->
energy stop (at a tick). Nothing else runs inside the window.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from llenergymeasure.backends import get_backend
from llenergymeasure.backends.base import Backend, PreparedBatch, RequestOutput
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.contract import TIMESERIES_FILE
from llenergymeasure.datasets.select import select_prompts
from llenergymeasure.faults import crashpoint
from llenergymeasure.gc_pause import gc_paused
from llenergymeasure.measure.environment import snapshot
from llenergymeasure.measure.flops import total_flops
from llenergymeasure.measure.session import MeasurementSession, Window
from llenergymeasure.results.schema import (
    ExperimentResult,
    LatencyStats,
    PhaseTimes,
    WarmupRecord,
)
from llenergymeasure.worker.launch import LAUNCH_ENV, WORKER_START_ENV
from llenergymeasure.worker.passes import PassRecord, fill_window
from llenergymeasure.worker.warmup import ratio_warnings, warm_up, warmup_batches, window_ratio

log = logging.getLogger("lem.worker")


def run_experiment(spec: ExperimentSpec) -> ExperimentResult:
    config = spec.config
    if config.mode == "server":
        from llenergymeasure.worker.serving.experiment import run_server_mode

        return run_server_mode(spec)
    started_at = datetime.now(timezone.utc)
    worker_start_s = _since_launch()
    # Importing the engine (torch + transformers: ~3 s on a 2-core CPU) is part of loading the
    # model, timed on its own. This worker's own modules are all imported by now, so what is
    # timed here is what the engine adds (~0 when a fork server preloaded it).
    t_import = time.perf_counter()
    backend_cls = get_backend(config.backend)
    engine_import_s = time.perf_counter() - t_import
    log.info("%s engine imported in %.2f s", config.backend, engine_import_s)
    out_dir = Path(spec.output_dir)

    with MeasurementSession(config.measurement, Path(spec.cache_dir)) as session:
        t0 = time.perf_counter()
        with backend_cls(config) as backend:
            model_load_s = time.perf_counter() - t0
            device = backend.device_description()
            log.info("model %s loaded in %.2f s on %s", config.model, model_load_s, device)
            t0 = time.perf_counter()
            backend.initialize()
            engine_init_s = time.perf_counter() - t0
            # Tokenising, truncating, padding and moving to the device happen here, before
            # the window: a huge prompt costs the window nothing (issue 14.3).
            t0 = time.perf_counter()
            prompts = select_prompts(config, Path(spec.base_dir), backend.tokenizer)
            batches = backend.prepare(prompts)
            prompt_prep_s = time.perf_counter() - t0
            session.attach(backend.cuda_devices())

            warm_set = warmup_batches(batches, _shape, config.warmup.pass_cover)
            last_pass: list[float] = []
            with session.sampling():
                warmup = warm_up(lambda: _serve_into(backend, warm_set, last_pass), config.warmup)
                # Repetition serves the energy reading; with no GPU energy source (CPU runs,
                # tests) one pass is the whole window.
                min_window_s = config.measurement.window_minimum_s if session.readers else 0.0
                window, filled, window_latencies = _measure(
                    backend,
                    session,
                    batches,
                    min_window_s,
                    time_limit_s=spec.time_limit_s,
                    elapsed_before_s=time.perf_counter() - t_import,
                )
                session.window_cut_by_time_limit = filled.cut_by_time_limit
            t_after = time.perf_counter()
            outputs = filled.outputs
            duration_s = window.duration_s
            log.info(
                "measured window: %d requests in %d pass(es), %.3f s",
                len(outputs),
                filled.passes,
                duration_s,
            )

            peak = backend.peak_memory()
            shape = backend.model_shape()
            engine_settings = backend.engine_settings()
            environment = snapshot(device, backend.library_versions(), session.gpus, session.driver)
        output_tokens = sum(o.output_tokens for o in outputs)
        report = session.report(output_tokens, len(outputs))
        has_series = session.write_timeseries(out_dir / TIMESERIES_FILE)

    input_tokens = sum(o.input_tokens for o in outputs)
    flops = (
        total_flops(shape, [(o.input_tokens, o.output_tokens) for o in outputs]) if shape else None
    )
    warm_shapes = [_shape(b) for b in warm_set] if warmup.runs else []
    window_shapes = [_shape(b) for b in batches]
    ratio = window_ratio(warm_shapes, last_pass, window_shapes * filled.passes, window_latencies)
    if ratio is not None:
        log.info("window / last warm-up batch latency: %.3f", ratio)
    phases = PhaseTimes(
        worker_start_s=worker_start_s,
        engine_import_s=engine_import_s,
        model_load_s=model_load_s,
        engine_init_s=engine_init_s,
        prompt_prep_s=prompt_prep_s,
        warmup_s=warmup.duration_s,
        window_s=duration_s,
        after_window_s=time.perf_counter() - t_after,
    )
    return ExperimentResult(
        experiment_id=spec.experiment_id,
        campaign_id=spec.campaign_id,
        cycle=spec.cycle,
        attempt=spec.attempt,
        config=config,
        started_at=started_at,
        finished_at=datetime.now(timezone.utc),
        environment=environment,
        engine_import_s=engine_import_s,
        model_load_s=model_load_s,
        warmup=WarmupRecord(
            runs=warmup.runs,
            converged=warmup.converged,
            final_cv=warmup.final_cv,
            latencies_s=warmup.latencies_s,
            cover=config.warmup.pass_cover,
            batch_shapes=[list(s) for s in warm_shapes],
            last_run_batch_latencies_s=list(last_pass),
        ),
        warmup_s=warmup.duration_s,
        measured_duration_s=duration_s,
        window_start_unix_s=window.start_unix_s,
        window_end_unix_s=window.end_unix_s,
        passes=filled.passes,
        n_requests=len(outputs),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        output_tokens_per_s=output_tokens / duration_s,
        total_tokens_per_s=(input_tokens + output_tokens) / duration_s,
        requests_per_s=len(outputs) / duration_s,
        latency=latency_stats(outputs),
        request_latencies_s=[o.latency_s for o in outputs],
        ttft=_engine_latency([o.ttft_s for o in outputs]),
        inter_token_latency=_engine_latency([o.inter_token_latency_s for o in outputs]),
        peak_memory_mb=peak.megabytes if peak else None,
        peak_memory_source=peak.source if peak else None,
        energy=report.energy,
        flags=report.flags,
        model_parameters=shape.total_params if shape else None,
        flops_estimate=flops,
        achieved_tflops=flops / duration_s / 1e12 if flops is not None else None,
        sampler_hz=config.measurement.sampler_hz if has_series else None,
        sampler_busy_fraction=session.sampler_busy_fraction(),
        timeseries_file=TIMESERIES_FILE if has_series else None,
        phases_s=phases,
        worker_start=os.environ.get(WORKER_START_ENV),
        window_batch_shapes=[list(s) for s in window_shapes],
        window_batch_latencies_s=window_latencies,
        window_to_warmup_latency_ratio=ratio,
        measurement_warnings=[
            *warmup.warnings(config.warmup),
            *ratio_warnings(ratio),
            *report.warnings,
        ],
        engine_settings=engine_settings,
    )


def _serve_into(backend: Backend, batches: list[PreparedBatch], latencies: list[float]) -> None:
    """One warm-up pass; `latencies` keeps the last pass's batch latencies."""
    latencies[:] = backend.serve(batches).batch_latencies_s


def _measure(
    backend: Backend,
    session: MeasurementSession,
    batches: list[PreparedBatch],
    min_window_s: float,
    *,
    time_limit_s: float | None,
    elapsed_before_s: float,
) -> tuple[Window, PassRecord, list[float]]:
    """The measured window: the prepared batches, in whole passes until it reaches
    min_window_s, and nothing else; also every batch's latency in it."""
    backend.reset_peak_memory()
    backend.synchronize()
    batch_latencies: list[float] = []

    def one_pass() -> list[RequestOutput]:
        served = backend.serve(batches)
        backend.synchronize()
        batch_latencies.extend(served.batch_latencies_s)
        return served.outputs

    # A collection now, none inside: the window does not pay for the warm-up's garbage, and a
    # pause of the collector is no part of the engine's work.
    gc.collect()
    with gc_paused(), session.window() as window:
        crashpoint("worker.generate")
        filled = fill_window(
            one_pass, min_window_s, time_limit_s=time_limit_s, elapsed_before_s=elapsed_before_s
        )
    return window, filled, batch_latencies


def _shape(batch: PreparedBatch) -> tuple[int, ...]:
    return batch.shape


def _since_launch() -> float | None:
    """Seconds since the runner launched this worker (it sets LAUNCH_ENV); None if unset."""
    launched = os.environ.get(LAUNCH_ENV)
    try:
        return time.time() - float(launched) if launched else None
    except ValueError:
        return None


def _engine_latency(values: list[float | None]) -> LatencyStats | None:
    """Stats of a per-request engine metric; None unless the engine gave it for every request."""
    known = [v for v in values if v is not None]
    return _stats(known) if known and len(known) == len(values) else None


def latency_stats(outputs: list[RequestOutput]) -> LatencyStats:
    return _stats([o.latency_s for o in outputs])


def _stats(values: list[float]) -> LatencyStats:
    latencies = np.array(values, dtype=float)
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    return LatencyStats(
        mean_s=float(latencies.mean()),
        p50_s=float(p50),
        p90_s=float(p90),
        p99_s=float(p99),
        max_s=float(latencies.max()),
    )
