"""`mode: server` in the worker: the experiment config turned into a server command line and
request fields, run through run_server_experiment, and written as one ExperimentResult whose
`server` holds each level (collation makes each level a row).

The top-level counts of that result are sums over the levels' steady-state windows; the
server's launch is its load phase (model_load_s); no engine is imported in this process.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.backends import get_server
from llenergymeasure.backends.common import load_tokenizer, model_path
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.contract import RESULT_FILE
from llenergymeasure.datasets.select import select_prompts
from llenergymeasure.errors import BackendError, ServerStoppedError
from llenergymeasure.measure.environment import snapshot
from llenergymeasure.measure.quality import MeasuredQuality, assess
from llenergymeasure.measure.session import MeasurementSession
from llenergymeasure.results.schema import (
    EnergyFigures,
    ExperimentResult,
    MeasurementFlags,
    PhaseTimes,
    QualityRecord,
    ServerLevel,
    WarmupRecord,
)
from llenergymeasure.worker.latency import latency_stats_of
from llenergymeasure.worker.launch import WORKER_START_ENV
from llenergymeasure.worker.serving.run import Load, ServerRun, run_server_experiment
from llenergymeasure.worker.serving.server import free_port

log = logging.getLogger("lem.worker")

BASELINE_STATE = "server up, model loaded, no requests"


def truncated(prompts: list[str], tokenizer: Any, max_tokens: int) -> list[str]:
    """Prompts cut to max_input_tokens as text (the server tokenises them itself)."""
    out = []
    for p in prompts:
        ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        out.append(p if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens]))
    return out


def run_server_mode(spec: ExperimentSpec) -> ExperimentResult:
    config = spec.config
    server = config.server
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request in worker.log
    assert server is not None  # ExperimentConfig refuses mode: server without it
    started_at = datetime.now(timezone.utc)
    out_dir = Path(spec.output_dir)
    path = model_path(config.model)
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(path)
    prompts = truncated(
        select_prompts(config, Path(spec.base_dir), tokenizer), tokenizer, config.max_input_tokens
    )
    prompt_prep_s = time.perf_counter() - t0
    port = free_port()
    adapter = get_server(config.backend)
    command = adapter.command(config, path, port)
    log.info("server mode: %s", " ".join(command))
    # The idle baseline is taken with the server up (run_server_experiment), not the cache's.
    measurement = config.measurement.model_copy(
        update={"baseline": config.measurement.baseline.model_copy(update={"enabled": False})}
    )
    with MeasurementSession(measurement, Path(spec.cache_dir)) as session:
        session.attach(None)
        load = Load("", path, prompts, config.max_output_tokens, adapter.request_fields(config))
        device = f"{len(session.gpus)} GPU(s)" if session.gpus else "cpu"
        environment = snapshot(device, {}, session.gpus, session.driver)  # engine versions too
        try:
            run = run_server_experiment(
                server,
                command,
                port,
                load,
                out_dir,
                readers=session.readers,
                baseline_s=config.measurement.baseline.duration_s,
            )
        except ServerStoppedError as e:
            # the levels finished before the server stopped keep their result, marked partial
            partial = e.partial if isinstance(e.partial, ServerRun) else None
            if partial is not None and any(not lv.failed for lv in partial.record.levels):
                result = _result(spec, partial, environment, started_at, prompt_prep_s)
                result = result.model_copy(update={"partial": True})
                write_text_atomic(out_dir / RESULT_FILE, result.model_dump_json(indent=2))
            raise
    return _result(spec, run, environment, started_at, prompt_prep_s)


def _result(
    spec: ExperimentSpec,
    run: Any,
    environment: Any,
    started_at: datetime,
    prompt_prep_s: float,
) -> ExperimentResult:
    record = run.record
    done = [lv for lv in record.levels if not lv.failed]
    if not done:
        reasons = "; ".join(f"{lv.level}: {lv.failed_reason}" for lv in record.levels)
        raise BackendError(f"every server level failed ({reasons})")
    window_s = sum(lv.window_s or 0.0 for lv in done)
    out_tokens = sum(lv.window_output_tokens or 0.0 for lv in done)
    in_tokens = sum(lv.window_input_tokens or 0 for lv in done)
    n_req = sum(lv.window_requests or 0 for lv in done)
    energy = _energy(done, record.idle_power_w, out_tokens, n_req)
    warnings = [f"level {lv.level}: {w}" for lv in record.levels for w in lv.warnings]
    if energy.energy_raw_j is None:
        warnings.append("no GPU energy source: energy fields are null")
    spans = [e for e, lv in zip(run.level_unix_s, record.levels, strict=True) if not lv.failed]
    return ExperimentResult(
        experiment_id=spec.experiment_id,
        campaign_id=spec.campaign_id,
        cycle=spec.cycle,
        attempt=spec.attempt,
        config=spec.config,
        started_at=started_at,
        finished_at=datetime.now(timezone.utc),
        environment=environment,
        engine_import_s=0.0,
        model_load_s=record.launch_s,
        warmup=WarmupRecord(
            runs=record.warmup_requests, converged=None, final_cv=None, latencies_s=[]
        ),
        warmup_s=0.0,
        measured_duration_s=window_s,
        window_start_unix_s=spans[0][0],
        window_end_unix_s=spans[-1][1],
        n_requests=n_req,
        input_tokens=in_tokens,
        output_tokens=round(out_tokens),
        output_tokens_per_s=out_tokens / window_s if window_s else 0.0,
        total_tokens_per_s=(in_tokens + out_tokens) / window_s if window_s else 0.0,
        requests_per_s=n_req / window_s if window_s else 0.0,
        latency=latency_stats_of(run.e2e_s),  # every completed request has one: `done` is not empty
        request_latencies_s=run.e2e_s,
        peak_memory_mb=None,
        peak_memory_source=None,
        energy=energy,
        flags=MeasurementFlags(short_window=window_s < 10 if energy.energy_raw_j else None),
        phases_s=PhaseTimes(
            engine_import_s=0.0,
            model_load_s=record.launch_s,
            engine_init_s=0.0,
            prompt_prep_s=prompt_prep_s,
            warmup_s=0.0,
            window_s=window_s,
            after_window_s=0.0,
        ),
        worker_start=os.environ.get(WORKER_START_ENV),
        measurement_warnings=warnings,
        server=record,
        quality=_quality(
            record.levels, window_s, record.idle_power_w, energy.energy_raw_j is not None
        ),
    )


def _quality(
    levels: list[ServerLevel], window_s: float, idle_w: float | None, energy_measured: bool
) -> QualityRecord:
    """The quality record of a server experiment (issue 17.5): the shared items over its
    levels' windows together, plus each level's own doubts (its warnings: a window under 10 s
    or under half its level, a load generator that fell behind) and failed levels."""
    baseline = idle_w is not None
    record = assess(
        MeasuredQuality(
            window_start_s=0.0,
            window_end_s=window_s,
            baseline_expected=energy_measured,
            baseline_source="measured" if baseline else None,
            baseline_age_s=0.0 if baseline else None,
            baseline_state=BASELINE_STATE if baseline else None,
        ),
        min_window_s=0.0,
        passes=1,
        latency_ratio=None,
    )
    reasons = [*record.reasons, *(d for lv in levels for d in lv.doubts())]
    return record.model_copy(update={"status": "check" if reasons else "ok", "reasons": reasons})


def _energy(
    levels: list[Any], idle_w: float | None, out_tokens: float, n_req: int
) -> EnergyFigures:
    raw = [lv.energy_window_j for lv in levels]
    if any(v is None for v in raw):
        return EnergyFigures()
    total = float(sum(raw))
    adj = [lv.energy_window_adjusted_j for lv in levels]
    adjusted = float(sum(adj)) if all(v is not None for v in adj) else None
    return EnergyFigures(
        energy_method="nvml_energy_counter",
        energy_raw_j=total,
        energy_window_s=sum(lv.window_s or 0.0 for lv in levels),
        baseline_power_w=idle_w,
        baseline_state=BASELINE_STATE,
        baseline_method="energy counter over the idle period",
        baseline_source="measured",
        baseline_age_s=0.0,
        energy_adjusted_j=adjusted,
        energy_raw_per_output_token_j=total / out_tokens if out_tokens else None,
        energy_adjusted_per_output_token_j=adjusted / out_tokens
        if adjusted is not None and out_tokens
        else None,
        energy_raw_per_request_j=total / n_req if n_req else None,
        energy_adjusted_per_request_j=adjusted / n_req if adjusted is not None and n_req else None,
    )
