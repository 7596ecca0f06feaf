"""Hand-made worker results for unit tests: a result.json as a worker would write it, and a
created campaign finished by playing its workers. A module of its own name (not conftest) so
that `pytest tests/unit tests/integration` imports it unambiguously."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.contract import RESULT_FILE
from llenergymeasure.orchestrator.experiments import ExperimentSpecs
from llenergymeasure.orchestrator.manifest import Manifest, ManifestStore
from llenergymeasure.results.schema import (
    EnergyFigures,
    Environment,
    ExperimentResult,
    LatencyStats,
    MeasurementFlags,
    OfflineRecord,
    WarmupRecord,
)


def make_result(spec: ExperimentSpec, **overrides: object) -> ExperimentResult:
    """A complete, valid result for spec, with round numbers that are easy to check."""
    started = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    data: dict[str, object] = {
        "experiment_id": spec.experiment_id,
        "campaign_id": spec.campaign_id,
        "cycle": spec.cycle,
        "attempt": spec.attempt,
        "config": spec.config,
        "started_at": started,
        "finished_at": started + timedelta(seconds=12),
        "environment": Environment(
            hostname_sha256="0123456789abcdef",
            python_version="3.11.9",
            platform="Linux-test",
            cpu_count=8,
            cpu_model="Test CPU",
            cpu_governor=None,
            device="cpu",
            in_container=False,
            library_versions={"torch": "2.0"},
        ),
        "model_load_s": 1.5,
        "measured_duration_s": 4.0,
        "window_start_unix_s": 1735787047.0,
        "window_end_unix_s": 1735787051.0,
        "n_requests": 4,
        "input_tokens": 40,
        "output_tokens": 80,
        "output_tokens_per_s": 20.0,
        "total_tokens_per_s": 30.0,
        "requests_per_s": 1.0,
        "latency": LatencyStats(mean_s=1.0, p50_s=1.0, p90_s=1.5, p99_s=1.9, max_s=2.0),
        "request_latencies_s": [0.5, 1.0, 1.0, 2.0],
        "offline": OfflineRecord(
            engine_import_s=2.5,
            warmup=WarmupRecord(
                runs=spec.config.warmup.runs,
                converged=None,
                final_cv=None,
                latencies_s=[0.1] * spec.config.warmup.runs,
            ),
            warmup_s=0.5,
            peak_memory_mb=123.0,
            peak_memory_source="process_peak_rss",
        ),
        "energy": EnergyFigures(),
        "flags": MeasurementFlags(short_window=True),
        "measurement_warnings": ["no energy source", "short window"],
    }
    data.update(overrides)
    return ExperimentResult.model_validate(data)


OverridesFor = Callable[[ExperimentSpec], dict[str, object]]


def finish_campaign(directory: Path, overrides_for: OverridesFor) -> Manifest:
    """Play the workers of a created campaign: write each entry's result.json (make_result
    with overrides_for(spec)) and mark the entry done in the manifest."""
    store = ManifestStore(directory)
    manifest = store.load()
    specs = ExperimentSpecs(directory)
    for entry in manifest.entries:
        spec = specs.spec(manifest, entry, attempt=1)
        result = make_result(spec, **overrides_for(spec))
        write_text_atomic(Path(spec.output_dir) / RESULT_FILE, result.model_dump_json())
        entry.status, entry.attempts = "done", 1
        entry.result_path = str(Path(entry.exp_path).parent / RESULT_FILE)
    store.save(manifest)
    return manifest
