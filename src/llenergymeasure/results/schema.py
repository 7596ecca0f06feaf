"""The result contract: what a worker writes and everything downstream reads.

Units are in the field names. Energy fields are null (never 0) when no energy source could
measure them, and the reason is in `measurement_warnings`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.config.spec import ExperimentSpec

SCHEMA_VERSION = "2"
"""2: a common core and one section per mode (1: one flat record, read by migration)."""

MemorySource = Literal["cuda_max_allocated", "process_peak_rss"]
ErrorCategory = Literal["config", "backend", "measurement", "oom", "interrupted", "crash"]
"""oom: memory ran out (CUDA, the CPU allocator, an engine's KV-cache sizing); interrupted:
SIGINT/SIGTERM (the orchestrator stopping it); crash: any other exception."""


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencyStats(_Result):
    """Per-request latency: from its batch's start to the batch's last generated token."""

    mean_s: float
    p50_s: float
    p90_s: float
    p99_s: float
    max_s: float


class WarmupRecord(_Result):
    """What the warm-up did before the measured window (config.warmup says what was asked)."""

    runs: int
    converged: bool | None = Field(
        description="Whether the latency CV fell below warmup.until_cv; null if none was set."
    )
    final_cv: float | None = Field(
        description="Latency CV of the last `window` runs (all runs without until_cv)."
    )
    latencies_s: list[float] = Field(description="Wall time of each run (one pass each).")
    cover: str | None = Field(None, description="config.warmup.cover: what one pass served.")
    batch_shapes: list[list[int]] = Field(
        default_factory=list, description="Shape of each batch one pass served, in order."
    )
    last_run_batch_latencies_s: list[float] = Field(
        default_factory=list, description="Each batch's wall time in the last pass."
    )
    last_run_batch_host_cpu_s: list[float] = Field(
        default_factory=list,
        description="CPU time the serving thread spent in each batch of the last pass.",
    )
    reference_runs: int | None = Field(
        None,
        description="Passes the window is compared with (window_to_warmup_latency_ratio): the "
        "last warmup.window passes after the first, or the only one.",
    )


class PhaseTimes(_Result):
    """Wall time of each phase of the worker, in order; only window_s is measured. Null: a
    phase the experiment's mode does not have."""

    worker_start_s: float | None = Field(
        None,
        description="From the worker process's creation to the start of the experiment "
        "(interpreter start, or a fork from the fork server, and the worker's own imports).",
    )
    engine_import_s: float | None = None
    model_load_s: float
    engine_init_s: float | None = Field(
        None, description="The engine's first-call set-up (Backend.initialize), part of loading."
    )
    prompt_prep_s: float = Field(
        description="Selecting, tokenising, truncating and batching the prompts."
    )
    warmup_s: float | None = None
    pre_window_gap_s: float | None = Field(
        None,
        description="From the end of the warm-up's last batch to the window's start, the device "
        "idle (synchronise, the start tick's wait). Kept short on purpose: on an H200 the first "
        "host-bound batch after a 0.5 s idle ran 35% slower (benchmarks/RESULTS.md).",
    )
    window_s: float
    after_window_s: float | None = Field(
        None, description="From the window's end to the result (reports, time series, snapshot)."
    )


class GpuEnergyRecord(_Result):
    """One GPU's share of the window energy."""

    uuid: str
    energy_j: float | None
    method: str | None
    window_s: float = Field(
        description="From the start tick to the window's end (to the end tick where the tail "
        "after the window could not be removed)."
    )
    edge_synced: bool = Field(description="Both window edges were aligned to a counter tick.")
    edge_uncertainty_s: float | None = Field(
        None, description="Sum over both edges of the read interval the tick fell in."
    )
    baseline_power_w: float | None = None


class CpuSocketEnergy(_Result):
    """One CPU socket's RAPL energy over the window; null where its zone was not readable."""

    socket: int
    package_j: float | None = None
    dram_j: float | None = None


class HostEnergy(_Result):
    """Host CPU energy from RAPL over the window, per socket; never added to GPU energy."""

    source: Literal["rapl"] = "rapl"
    readable: bool
    reason: str | None = Field(None, description="Why nothing was read ('not readable: ...').")
    sockets: list[CpuSocketEnergy] = Field(default_factory=list)


class EnergyFigures(_Result):
    """Energy over the measured window, summed over the GPUs in use. All null when no energy
    source was available: null means 'not measured', never zero."""

    energy_method: str | None = Field(
        None, description="nvml_energy_counter, or the power-integration fallback; null if none."
    )
    energy_source: str | None = Field(
        None, description="What measured energy_raw_j: nvml, zeus or codecarbon (null: none)."
    )
    energy_source_version: str | None = Field(
        None, description="Its version (for nvml, the driver's)."
    )
    energy_nvml_j: float | None = Field(
        None,
        description="With zeus or codecarbon: NVML's counter over the same window, summed over "
        "GPUs (per_gpu has each), for agreement.",
    )
    energy_raw_j: float | None = None
    energy_window_s: float | None = Field(
        None, description="Longest per-GPU window the energy covers (see per_gpu.window_s)."
    )
    baseline_power_w: float | None = Field(None, description="Idle power, summed over GPUs.")
    baseline_state: str | None = Field(None, description="GPU state the baseline was taken in.")
    baseline_method: str | None = None
    baseline_source: Literal["measured", "cache"] | None = None
    baseline_age_s: float | None = None
    energy_adjusted_j: float | None = Field(
        None,
        description="Sum over GPUs of energy_j - baseline_power_w * window_s (one GPU: "
        "energy_raw_j - baseline_power_w * energy_window_s).",
    )
    energy_raw_per_output_token_j: float | None = None
    energy_adjusted_per_output_token_j: float | None = None
    energy_raw_per_request_j: float | None = None
    energy_adjusted_per_request_j: float | None = None
    per_gpu: list[GpuEnergyRecord] = Field(default_factory=list)
    cpu_package_energy_j: float | None = Field(
        None,
        description="CPU package energy from RAPL over the window, summed over sockets; never "
        "added to GPU energy.",
    )
    cpu_dram_energy_j: float | None = Field(
        None, description="DRAM energy from RAPL over the window, summed over sockets."
    )
    host: HostEnergy | None = Field(
        None, description="RAPL per socket, or why it was not readable (null: not asked)."
    )


class MeasurementFlags(_Result):
    """Booleans a reader filters on; each true flag also has a line in measurement_warnings."""

    throttled: bool | None = Field(None, description="Any clock slowdown during the window.")
    thermal_throttled: bool | None = None
    power_capped: bool | None = None
    max_temperature_c: float | None = None
    short_window: bool | None = Field(
        None,
        description="Measured window under 10 s with min_window_s off, or under min_window_s "
        "because one more pass would have passed the time limit (null: no energy).",
    )
    energy_counter_unsupported: bool | None = None
    baseline_stale: bool | None = None
    mig_enabled: bool | None = None
    persistence_mode_off: bool | None = None
    other_gpu_processes: bool | None = None
    other_gpu_processes_in_window: bool | None = Field(
        None,
        description="Another process had a compute context on a measured GPU at the window's "
        "start or end (NVML's process list; this worker's own processes excluded): its energy "
        "is in this result. Null: no GPU, or the list was unreadable.",
    )


PhaseSplitMethod = Literal["prefill_pass"]


class PhaseSplit(_Result):
    """measurement.phase_split: the window's raw energy split into prefill and decode.

    Method 'prefill_pass': after the window, the same requests were served again with one
    output token each, in a window of their own; its energy per request, times the window's
    requests, is the prefill energy, and the rest of the window's energy is decode. The first
    output token of each request comes from prefill, so decode tokens are output tokens minus
    requests. Energies are null where no energy source measured both windows."""

    method: PhaseSplitMethod
    prefill_window_s: float = Field(description="Length of the prefill pass's own window.")
    prefill_passes: int = Field(ge=1)
    prefill_requests: int
    prefill_output_tokens: int = Field(description="Tokens the prefill pass generated (1 each).")
    prefill_window_energy_j: float | None = Field(
        None, description="Raw energy measured over the prefill pass's window."
    )
    energy_prefill_j: float | None = Field(
        None, description="prefill_window_energy_j / prefill_requests x the window's requests."
    )
    energy_decode_j: float | None = Field(
        None, description="The window's energy_raw_j minus energy_prefill_j."
    )
    energy_per_input_token_j: float | None = Field(
        None, description="energy_prefill_j / the window's input tokens."
    )
    energy_per_output_token_j: float | None = Field(
        None,
        description="energy_decode_j / decode tokens (the window's output tokens minus its "
        "requests: each request's first token is prefill's).",
    )
    decode_tokens: int


QualityStatus = Literal["ok", "check"]


class QualityRecord(_Result):
    """How far the window's numbers can be trusted, in one place (issue 17.5). `status` is
    'check' when any item crossed its threshold (measure/quality.py); `reasons` says which.
    Energy items are null where no energy source measured the window."""

    status: QualityStatus
    reasons: list[str] = Field(default_factory=list)
    counter_update_period_s: float | None = Field(
        None,
        description="Observed time between two energy-counter updates, after the window "
        "(longest over GPUs; ~0.1 s on H100/H200). Null without a counter.",
    )
    edge_uncertainty_j: float | None = Field(
        None,
        description="Energy the window edges could be off by: each GPU's edge_uncertainty_s "
        "times its mean window power, summed over GPUs.",
    )
    edge_uncertainty_pct: float | None = Field(
        None, description="edge_uncertainty_j as a percentage of the window's raw energy."
    )
    sampler_coverage: float | None = Field(
        None,
        description="Samples taken in the window over those the sampler rate asks for (lowest "
        "over GPUs, capped at 1). Null with the sampler off or no GPU.",
    )
    sampler_largest_gap_s: float | None = Field(
        None,
        description="Longest stretch of the window without a sample, window edges included "
        "(longest over GPUs).",
    )
    throttled_share: float | None = Field(
        None,
        description="Share of the window's samples with a clock slowdown reason (thermal, "
        "power cap, hardware slowdown). Null without samples.",
    )
    baseline_source: Literal["measured", "cache"] | None = None
    baseline_age_s: float | None = None
    baseline_state: str | None = None
    baseline_stale: bool | None = None
    window_s: float = Field(description="Measured window length.")
    min_window_s: float = Field(
        description="The minimum the window had to reach (0 where repetition did not apply)."
    )
    window_meets_minimum: bool
    passes: int = Field(ge=1, description="Whole passes of the prompt set in the window.")
    window_to_warmup_latency_ratio: float | None = Field(
        None,
        description="The window's batch latencies over the settled warm-up passes' (the last "
        "warmup.window after the first), shape by shape with each shape's median (sum over "
        "sum); above 1.10 warm-up costs reached the window. Null without warm-up.",
    )
    host_steal_s: float | None = Field(
        None,
        description="CPU time the hypervisor gave to other guests during the window, summed "
        "over this machine's CPUs (/proc/stat steal); null where not reported.",
    )
    host_cpu_s: float | None = Field(
        None, description="CPU time (user + system, all threads) the worker spent in the window."
    )
    gpu_busy_share: float | None = Field(
        None,
        description="Mean NVML utilisation over the window (share of time a kernel ran), of "
        "the busiest GPU. Null with the sampler off or no GPU.",
    )
    host_bound: bool | None = Field(
        None,
        description="gpu_busy_share under 0.5: the device waited on the host, so throughput "
        "follows the host CPU's pace (then a reason says so). Null without samples.",
    )


class GpuInfo(_Result):
    """One GPU at the start of the experiment."""

    index: int | None
    uuid: str
    name: str
    pci_bus_id: str | None
    memory_total_mb: float | None
    power_limit_w: float | None
    default_power_limit_w: float | None
    persistence_mode: bool | None
    mig_enabled: bool | None
    ecc_enabled: bool | None
    sm_clock_mhz: int | None
    memory_clock_mhz: int | None
    max_sm_clock_mhz: int | None
    temperature_c: int | None
    compute_processes: int = Field(description="Processes using the GPU before this one.")


class Environment(_Result):
    """Where the experiment ran (the full snapshot grows with the measurement layer)."""

    hostname_sha256: str = Field(description="Hash of the hostname: comparable, not revealing.")
    python_version: str
    platform: str
    cpu_count: int | None
    cpu_model: str | None
    cpu_governor: str | None
    device: str = Field(description="e.g. 'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)'.")
    in_container: bool
    gpus: list[GpuInfo] = Field(default_factory=list, description="GPUs in use.")
    gpu_count: int = 0
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    library_versions: dict[str, str]


class ServerLevel(_Result):
    """One load level of a `mode: server` experiment, every count over its steady-state
    window (times in seconds from the level's first send). Null energy: not measured."""

    level: str = Field(description="r<rate> (open loop), c<concurrency> (closed) or trace.")
    level_index: int
    failed: bool = False
    failed_reason: str | None = None
    requests_sent: int
    requests_ok: int
    requests_failed: int
    errors: list[str] = Field(default_factory=list, description="Up to 5 distinct errors.")
    target_rate_rps: float | None
    achieved_rate_rps: float | None = Field(description="(sends - 1) / (last - first send).")
    send_lag_p99_s: float | None = Field(description="p99 of actual minus scheduled send time.")
    generator_limited: bool = Field(
        description="send_lag_p99_s above server.lag_budget_s: the generator was the limit."
    )
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    ttft_p99_s: float | None
    itl_p50_s: float | None
    itl_p90_s: float | None
    itl_p99_s: float | None
    e2e_p50_s: float | None
    e2e_p90_s: float | None
    e2e_p99_s: float | None
    window_start_s: float | None = None
    window_end_s: float | None = None
    window_s: float | None
    window_coverage: float | None = Field(description="Window over the level's span (0-1).")
    window_rule: str | None = None
    mser5_truncation_s: float | None = None
    peak_in_flight: int | None = None
    window_output_tokens: float | None = None
    window_input_tokens: int | None = Field(
        None, description="Prompt tokens of the requests that ended inside the window."
    )
    window_requests: int | None = Field(
        None, description="Requests that ended inside the window (energy per request's divisor)."
    )
    output_tokens_per_s: float | None
    goodput_rps: float | None = None
    energy_window_j: float | None = None
    energy_window_adjusted_j: float | None = None
    energy_per_output_token_j: float | None = None
    energy_adjusted_per_output_token_j: float | None = None
    energy_per_input_token_j: float | None = None
    energy_per_request_j: float | None = None
    energy_per_good_request_j: float | None = None
    attributed_energy_sum_j: float | None = Field(
        None, description="Sum of the per-request energies (requests file): equals the window's."
    )
    requests_file: str = Field(description="Per-request Parquet, relative to result.json.")
    warnings: list[str] = Field(default_factory=list)

    def doubts(self) -> list[str]:
        """This level's lines in its experiment's quality reasons (its warnings, its failure):
        one spelling for the worker that writes them and the tables that split them by level."""
        out = [f"level {self.level}: {w}" for w in self.warnings]
        if self.failed:
            out.append(f"level {self.level} failed: {self.failed_reason}")
        return out


class GpuProcesses(_Result):
    gpu: str = Field(description="The GPU's UUID.")
    pids: list[int]


class ServerRecord(_Result):
    """What a `mode: server` experiment measured apart from its levels, and the levels."""

    command: list[str] = Field(description="The server's command line (none: server.url's).")
    pid: int | None = Field(description="The launched server's process (group) id.")
    launched_by_lem: bool = Field(True, description="False: server.url, never started or stopped.")
    endpoint: str | None = Field(None, description="The base URL every request went to.")
    served_model: str | None = Field(None, description="The model name the requests named.")
    gpus: list[int] | None = Field(None, description="CUDA numbers of the GPUs counted.")
    gpu_processes: list[GpuProcesses] = Field(
        default_factory=list, description="Per GPU counted: the processes NVML showed on it."
    )
    launch_s: float = Field(
        description="From starting the server to its first healthy answer (server.url: the wait)."
    )
    launch_energy_j: float | None = Field(description="GPU energy over the launch.")
    idle_power_w: float | None = Field(
        description="Mean GPU power with the server up and the model loaded, no requests."
    )
    idle_s: float
    warmup_requests: int
    log_file: str | None = Field(description="The server's own output, relative to result.json.")
    levels: list[ServerLevel]


class OfflineRecord(_Result):
    """What only a `mode: offline` experiment measures: the engine in this process, its
    warm-up, the window's batches and the engine's own figures."""

    engine_import_s: float = Field(
        description="Importing the backend's inference engine (torch + transformers, vLLM, "
        "...) in the worker: the first part of loading, before model_load_s and not in it; "
        "outside the window. The load phase is engine_import_s + model_load_s."
    )
    warmup: WarmupRecord
    warmup_s: float
    passes: int = Field(
        1, ge=1, description="Whole passes of the prompt set in the window (min_window_s)."
    )
    ttft: LatencyStats | None = Field(
        None,
        description="Time to first token per request, from the engine's request metrics (vLLM, "
        "TensorRT-LLM); null where the backend reports none (PyTorch generates whole batches).",
    )
    inter_token_latency: LatencyStats | None = Field(
        None,
        description="Mean time between a request's output tokens after the first, from the "
        "engine's request metrics; null where the backend reports none.",
    )
    peak_memory_mb: float | None
    peak_memory_source: MemorySource | None
    model_parameters: int | None = None
    flops_estimate: float | None = Field(
        None, description="Forward-pass FLOPs of the window (reference only, see measure/flops)."
    )
    achieved_tflops: float | None = Field(None, description="flops_estimate / window / 1e12.")
    window_batch_shapes: list[list[int]] = Field(
        default_factory=list, description="Shape of each batch the window served, in order."
    )
    window_batch_latencies_s: list[float] = Field(default_factory=list)
    window_batch_host_cpu_s: list[float] = Field(
        default_factory=list,
        description="CPU time the serving thread spent in each window batch: near the batch's "
        "wall time when the host set the pace (or waited spinning), well under it when the "
        "thread was off the CPU.",
    )
    window_host_steal_s: float | None = Field(
        None, description="quality.host_steal_s, also here for results written before it."
    )
    window_same_shape_latency_cv: float | None = Field(
        None,
        description="Largest CV of the window's batch latencies among batches of one shape "
        "(identical work): how much the pace moved inside the window; above 0.05 a warning. "
        "Null when no shape ran twice.",
    )
    phase_split: PhaseSplit | None = Field(
        None, description="Prefill / decode energy split (measurement.phase_split); else null."
    )
    engine_settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings as the loaded engine reported them, its own defaults resolved.",
    )


class ExperimentResult(_Result):
    """One experiment cycle, measured: a core every mode fills, and one section per mode
    (`offline`, `server`). In mode: server the core's counts are the sums over the levels'
    steady-state windows and `server` holds each level (results.csv: one row each)."""

    schema_version: str = SCHEMA_VERSION
    experiment_id: str
    campaign_id: str
    cycle: int
    attempt: int
    config: ExperimentConfig
    started_at: datetime
    finished_at: datetime
    environment: Environment
    model_load_s: float = Field(
        description="Loading weights and tokenizer (mode: server: the server's launch to its "
        "first healthy answer); outside the window."
    )
    measured_duration_s: float = Field(description="Wall time of the measured window.")
    window_start_unix_s: float = Field(description="Window start, for aligning external logs.")
    window_end_unix_s: float
    n_requests: int = Field(description="Requests served in the window, over all passes.")
    input_tokens: int
    output_tokens: int
    output_tokens_per_s: float
    total_tokens_per_s: float = Field(description="(input + output tokens) / window seconds.")
    requests_per_s: float
    latency: LatencyStats
    request_latencies_s: list[float]
    energy: EnergyFigures
    flags: MeasurementFlags
    sampler_hz: float | None = Field(None, description="Time-series rate; null if off.")
    sampler_busy_fraction: float | None = Field(
        None,
        description="Share of the window the sampler thread spent in NVML reads: an upper "
        "bound on the host time it took from the workload.",
    )
    timeseries_file: str | None = Field(
        None, description="Sidecar Parquet of sampled power etc., relative to this file."
    )
    phases_s: PhaseTimes | None = None
    worker_start: str | None = Field(
        None,
        description="How the worker process started: 'forkserver' (forked from a server with "
        "the engine preloaded, before any CUDA use; on the host, or in the persistent "
        "container), 'spawn' (a fresh interpreter) or 'exec' (a plain exec in the persistent "
        "container), with the reason where a fork server was not used (the docker runner's "
        "cold start is on purpose).",
    )
    quality: QualityRecord | None = Field(
        None, description="The measurement-quality record (null only in older results)."
    )
    measurement_warnings: list[str] = Field(default_factory=list)
    offline: OfflineRecord | None = Field(None, description="mode: offline only.")
    server: ServerRecord | None = Field(None, description="mode: server only: launch and levels.")
    partial: bool = Field(
        False,
        description="The experiment failed (its server stopped) after the levels marked done: "
        "kept for them, never a finished result (its entry is failed).",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_version_1(cls, data: Any) -> Any:
        """A version-1 result (one flat record) read as this version: its offline-only fields
        move into `offline`; a server result's zero-filled ones are dropped."""
        if not isinstance(data, dict) or data.get("schema_version") != "1":
            return data
        moved = {k: v for k, v in data.items() if k in OfflineRecord.model_fields}
        out = {k: v for k, v in data.items() if k not in moved} | {"schema_version": "2"}
        if out.get("server") is None:
            out["offline"] = moved
        return out


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
