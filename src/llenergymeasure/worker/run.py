"""The measured window for one experiment cycle.

Order matters: pre-flight -> load (timed, outside the window) -> idle baseline -> sampler on ->
warm-up -> synchronise -> energy start (at a counter tick) -> serve every prompt, in whole passes
until the window reaches min_window_s -> synchronise -> energy stop (at a tick). Nothing
else runs inside the window.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from llenergymeasure.backends import get_backend
from llenergymeasure.backends.base import RequestOutput
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.contract import TIMESERIES_FILE
from llenergymeasure.datasets.select import select_prompts
from llenergymeasure.faults import crashpoint
from llenergymeasure.measure.environment import snapshot
from llenergymeasure.measure.flops import total_flops
from llenergymeasure.measure.session import MeasurementSession
from llenergymeasure.results.schema import ExperimentResult, LatencyStats, WarmupRecord
from llenergymeasure.worker.passes import fill_window
from llenergymeasure.worker.warmup import warm_up

log = logging.getLogger("lem.worker")


def run_experiment(spec: ExperimentSpec) -> ExperimentResult:
    config = spec.config
    started_at = datetime.now(timezone.utc)
    # Importing the engine (torch + transformers: ~3 s on a 2-core CPU) is part of loading the
    # model, timed on its own. This worker's own modules are all imported by now, so what is
    # timed here is what the engine adds.
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
            prompts = select_prompts(config, Path(spec.base_dir), backend.tokenizer)
            session.attach(backend.gpu_uuids())

            with session.sampling():
                batch = prompts[: config.batch_size]
                warmup = warm_up(lambda: backend.generate(batch), config.warmup)

                backend.reset_peak_memory()
                backend.synchronize()
                with session.window() as window:
                    crashpoint("worker.generate")

                    def one_pass() -> list[RequestOutput]:
                        result = backend.generate(prompts)
                        backend.synchronize()
                        return result

                    filled = fill_window(
                        one_pass,
                        # Repetition serves the energy reading; with no GPU energy source
                        # (CPU runs, tests) one pass is the whole window.
                        config.measurement.min_window_s if session.readers else 0.0,
                        time_limit_s=spec.time_limit_s,
                        elapsed_before_s=time.perf_counter() - t_import,
                    )
                session.window_cut_by_time_limit = filled.cut_by_time_limit
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
        measurement_warnings=[*warmup.warnings(config.warmup), *report.warnings],
        engine_settings=engine_settings,
    )


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
