"""One experiment, one bracket: spec -> scenario (load, then its measured windows) -> result.

Each mode is one scenario, `run(spec) -> Measured`: offline (worker/offline.py, the prepared
batches) and server (worker/serving/experiment.py, the load levels). The scenario measures; this
module alone turns what it measured into an ExperimentResult (the core every mode has, and the
scenario's own section), the partial one of a server that stopped included.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.contract import RESULT_FILE, WORKER_START_ENV
from llenergymeasure.errors import ServerStoppedError
from llenergymeasure.results.schema import (
    EnergyFigures,
    Environment,
    ExperimentResult,
    MeasurementFlags,
    OfflineRecord,
    PhaseTimes,
    QualityRecord,
    ServerRecord,
)
from llenergymeasure.worker.latency import latency_stats_of


@dataclass(frozen=True)
class Measured:
    """What a scenario hands the bracket: the window's figures every mode has (a server's
    summed over its finished levels' windows) and the mode's own section."""

    environment: Environment
    model_load_s: float
    window_s: float
    window_unix_s: tuple[float, float]
    n_requests: int
    input_tokens: int
    output_tokens: float
    """A server's are its chunks' share of the server's counts: not whole."""
    request_latencies_s: list[float]
    energy: EnergyFigures
    flags: MeasurementFlags
    quality: QualityRecord
    warnings: list[str]
    phases_s: PhaseTimes
    section: OfflineRecord | ServerRecord
    sampler_hz: float | None = None
    sampler_busy_fraction: float | None = None
    timeseries_file: str | None = None


def _scenario(mode: str) -> Callable[[ExperimentSpec], Measured]:
    if mode == "server":
        from llenergymeasure.worker.serving.experiment import run_server_mode

        return run_server_mode
    from llenergymeasure.worker.offline import run_offline

    return run_offline


def run_experiment(spec: ExperimentSpec) -> ExperimentResult:
    started_at = datetime.now(timezone.utc)
    try:
        measured = _scenario(spec.config.mode)(spec)
    except ServerStoppedError as e:
        # the levels finished before the server stopped keep their result, marked partial
        if isinstance(e.partial, Measured):
            result = result_of(spec, started_at, e.partial).model_copy(update={"partial": True})
            path = Path(spec.output_dir) / RESULT_FILE
            write_text_atomic(path, result.model_dump_json(indent=2))
        raise
    return result_of(spec, started_at, measured)


def result_of(spec: ExperimentSpec, started_at: datetime, m: Measured) -> ExperimentResult:
    """The one place an ExperimentResult is built."""
    window_s = m.window_s

    def per_s(n: float) -> float:
        return n / window_s if window_s else 0.0

    return ExperimentResult(
        experiment_id=spec.experiment_id,
        campaign_id=spec.campaign_id,
        cycle=spec.cycle,
        attempt=spec.attempt,
        config=spec.config,
        started_at=started_at,
        finished_at=datetime.now(timezone.utc),
        environment=m.environment,
        model_load_s=m.model_load_s,
        measured_duration_s=window_s,
        window_start_unix_s=m.window_unix_s[0],
        window_end_unix_s=m.window_unix_s[1],
        n_requests=m.n_requests,
        input_tokens=m.input_tokens,
        output_tokens=round(m.output_tokens),
        output_tokens_per_s=per_s(m.output_tokens),
        total_tokens_per_s=per_s(m.input_tokens + m.output_tokens),
        requests_per_s=per_s(m.n_requests),
        latency=latency_stats_of(m.request_latencies_s),
        request_latencies_s=m.request_latencies_s,
        energy=m.energy,
        flags=m.flags,
        sampler_hz=m.sampler_hz,
        sampler_busy_fraction=m.sampler_busy_fraction,
        timeseries_file=m.timeseries_file,
        phases_s=m.phases_s,
        worker_start=os.environ.get(WORKER_START_ENV),
        quality=m.quality,
        measurement_warnings=m.warnings,
        offline=m.section if isinstance(m.section, OfflineRecord) else None,
        server=m.section if isinstance(m.section, ServerRecord) else None,
    )
