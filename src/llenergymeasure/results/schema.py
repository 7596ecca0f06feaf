"""The result contract: what a worker writes and everything downstream reads.

Units are in the field names. Energy fields are null (never 0) when no energy source could
measure them, and the reason is in `warnings`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.config.spec import ExperimentSpec

SCHEMA_VERSION = "1"

MemorySource = Literal["cuda_max_allocated", "process_peak_rss"]
ErrorCategory = Literal["config", "backend", "measurement", "crash"]


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencyStats(_Result):
    """Per-request latency: from its batch's start to the batch's last generated token."""

    mean_s: float
    p50_s: float
    p90_s: float
    p99_s: float
    max_s: float


class EnergyFigures(_Result):
    """Energy over the measured window. All null when no energy source was available."""

    energy_method: str | None = Field(
        None, description="How energy was obtained (e.g. the NVML counter); null if it was not."
    )
    energy_raw_j: float | None = None
    baseline_power_w: float | None = None
    energy_adjusted_j: float | None = Field(
        None, description="energy_raw_j - baseline_power_w * measured_duration_s"
    )
    energy_raw_per_output_token_j: float | None = None
    energy_adjusted_per_output_token_j: float | None = None
    energy_raw_per_request_j: float | None = None
    energy_adjusted_per_request_j: float | None = None


class Environment(_Result):
    """Where the experiment ran (the full snapshot grows with the measurement layer)."""

    hostname_sha256: str = Field(description="Hash of the hostname: comparable, not revealing.")
    python_version: str
    platform: str
    cpu_count: int | None
    device: str = Field(description="e.g. 'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)'.")
    in_container: bool
    library_versions: dict[str, str]


class ExperimentResult(_Result):
    """One experiment cycle, measured."""

    schema_version: str = SCHEMA_VERSION
    experiment_id: str
    campaign_id: str
    cycle: int
    attempt: int
    config: ExperimentConfig
    started_at: datetime
    finished_at: datetime
    environment: Environment
    model_load_s: float = Field(description="Loading weights and tokenizer; outside the window.")
    warmup_runs: int
    warmup_s: float
    measured_duration_s: float = Field(description="Wall time of the measured window.")
    n_requests: int
    input_tokens: int
    output_tokens: int
    output_tokens_per_s: float
    total_tokens_per_s: float = Field(description="(input + output tokens) / window seconds.")
    requests_per_s: float
    latency: LatencyStats
    request_latencies_s: list[float]
    peak_memory_mb: float | None
    peak_memory_source: MemorySource | None
    energy: EnergyFigures
    warnings: list[str] = Field(default_factory=list)


class ErrorRecord(_Result):
    """error.json: why a worker failed, for the manifest and the user."""

    schema_version: str = SCHEMA_VERSION
    experiment_id: str | None
    cycle: int | None
    attempt: int | None
    category: ErrorCategory
    error_type: str
    message: str
    traceback: str
    at: datetime


def schema_fingerprint() -> str:
    """Hash of the exp.json and result.json schemas: a host and a worker (or an image) with
    different fingerprints cannot talk to each other safely."""
    schemas = {
        "version": SCHEMA_VERSION,
        "spec": ExperimentSpec.model_json_schema(),
        "result": ExperimentResult.model_json_schema(),
        "error": ErrorRecord.model_json_schema(),
    }
    text = json.dumps(schemas, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
