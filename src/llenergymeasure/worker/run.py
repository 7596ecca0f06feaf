"""The measured window for one experiment cycle (see shared ARCHITECTURE, 'The measured window').

Order matters: load (timed, outside the window) -> warm-up -> synchronise -> energy start ->
serve every prompt -> synchronise -> energy stop. Nothing else runs inside the window.
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
from llenergymeasure.datasets.select import select_prompts
from llenergymeasure.measure.energy import NO_ENERGY_WARNING, EnergyReading, find_energy_source
from llenergymeasure.measure.environment import snapshot
from llenergymeasure.results.schema import EnergyFigures, ExperimentResult, LatencyStats

log = logging.getLogger("lem.worker")


def run_experiment(spec: ExperimentSpec) -> ExperimentResult:
    config = spec.config
    warnings: list[str] = []
    started_at = datetime.now(timezone.utc)
    backend_cls = get_backend(config.backend)

    t0 = time.perf_counter()
    with backend_cls(config) as backend:
        model_load_s = time.perf_counter() - t0
        log.info(
            "model %s loaded in %.2f s on %s",
            config.model,
            model_load_s,
            backend.device_description(),
        )
        prompts = select_prompts(config, Path(spec.base_dir), backend.tokenizer)

        t0 = time.perf_counter()
        for run in range(config.warmup_runs):
            backend.generate(prompts[: config.batch_size])
            log.info("warm-up run %d/%d done", run + 1, config.warmup_runs)
        warmup_s = time.perf_counter() - t0

        device = backend.device_description()
        source = find_energy_source(device)
        if source is None:
            warnings.append(NO_ENERGY_WARNING)
        backend.reset_peak_memory()
        backend.synchronize()
        if source is not None:
            source.start()
        t_start = time.perf_counter()
        outputs = backend.generate(prompts)
        backend.synchronize()
        duration_s = time.perf_counter() - t_start
        reading = source.stop() if source is not None else None
        log.info("measured window: %d requests in %.3f s", len(outputs), duration_s)

        peak = backend.peak_memory()
        environment = snapshot(device, backend.library_versions())

    return ExperimentResult(
        experiment_id=spec.experiment_id,
        campaign_id=spec.campaign_id,
        cycle=spec.cycle,
        attempt=spec.attempt,
        config=config,
        started_at=started_at,
        finished_at=datetime.now(timezone.utc),
        environment=environment,
        model_load_s=model_load_s,
        warmup_runs=config.warmup_runs,
        warmup_s=warmup_s,
        measured_duration_s=duration_s,
        n_requests=len(outputs),
        input_tokens=sum(o.input_tokens for o in outputs),
        output_tokens=sum(o.output_tokens for o in outputs),
        output_tokens_per_s=sum(o.output_tokens for o in outputs) / duration_s,
        total_tokens_per_s=sum(o.input_tokens + o.output_tokens for o in outputs) / duration_s,
        requests_per_s=len(outputs) / duration_s,
        latency=latency_stats(outputs),
        request_latencies_s=[o.latency_s for o in outputs],
        peak_memory_mb=peak.megabytes if peak else None,
        peak_memory_source=peak.source if peak else None,
        energy=energy_figures(reading, duration_s, outputs),
        warnings=warnings,
    )


def latency_stats(outputs: list[RequestOutput]) -> LatencyStats:
    latencies = np.array([o.latency_s for o in outputs], dtype=float)
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    return LatencyStats(
        mean_s=float(latencies.mean()),
        p50_s=float(p50),
        p90_s=float(p90),
        p99_s=float(p99),
        max_s=float(latencies.max()),
    )


def energy_figures(
    reading: EnergyReading | None, duration_s: float, outputs: list[RequestOutput]
) -> EnergyFigures:
    """Raw and baseline-adjusted energy, and per output token / per request."""
    if reading is None:
        return EnergyFigures()
    tokens = sum(o.output_tokens for o in outputs)
    adjusted = (
        reading.energy_j - reading.baseline_power_w * duration_s
        if reading.baseline_power_w is not None
        else None
    )
    return EnergyFigures(
        energy_method=reading.method,
        energy_raw_j=reading.energy_j,
        baseline_power_w=reading.baseline_power_w,
        energy_adjusted_j=adjusted,
        energy_raw_per_output_token_j=_per(reading.energy_j, tokens),
        energy_adjusted_per_output_token_j=_per(adjusted, tokens),
        energy_raw_per_request_j=_per(reading.energy_j, len(outputs)),
        energy_adjusted_per_request_j=_per(adjusted, len(outputs)),
    )


def _per(energy_j: float | None, count: int) -> float | None:
    return energy_j / count if energy_j is not None and count else None
