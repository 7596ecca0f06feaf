"""What a failed attempt was, in one line: timed out, out of memory (the worker's error or an
engine child's log line), the worker's own error (configuration errors are not retried), or
an exit without a result, with the log's tail."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.contract import ERROR_FILE, EXP_FILE, LOG_FILE
from llenergymeasure.oom import log_says_out_of_memory
from llenergymeasure.orchestrator.runners import Job, Outcome
from llenergymeasure.results.schema import ErrorRecord

LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class Failure:
    status: Literal["failed", "oom"]
    reason: str
    retryable: bool
    """Another attempt may end differently: not for a configuration error or running out of
    memory, which recur with the same configuration (`lem resume --retry-failed` reruns them
    on request)."""


def diagnose(job: Job, outcome: Outcome) -> Failure:
    out_dir = job.output_dir
    if outcome.timed_out:
        reason = f"timed out after {job.timeout_s:g} s; worker killed. {log_tail(out_dir)}"
        return Failure("failed", reason, True)
    try:
        record: ErrorRecord | None = ErrorRecord.model_validate_json(
            (out_dir / ERROR_FILE).read_bytes()
        )
    except (OSError, ValidationError):
        record = None
    log_oom = log_says_out_of_memory(log_text(out_dir)[-20_000:])
    if (record is not None and record.category == "oom") or log_oom:
        # the worker's own error, or (an engine's child process ran out) the log's line
        worker_said = record is not None and record.category == "oom"
        cause = f"{record.error_type}: {record.message}" if record and worker_said else log_oom
        settings = ", ".join(f"{k}={v}" for k, v in memory_settings(job).items())
        return Failure("oom", f"out of memory with {settings}. {cause}", False)
    if record is not None:
        reason = f"{record.error_type}: {record.message}"
        return Failure("failed", reason, record.category != "config")
    how = describe_exit(outcome.returncode)
    if outcome.returncode == -signal.SIGKILL:
        how += " (not sent by lem: often the kernel's out-of-memory killer)"
    reason = f"worker {how} without writing a result. {log_tail(out_dir)}"
    return Failure("failed", reason, True)


def memory_settings(job: Job) -> dict[str, object]:
    """The settings that decide how much memory an experiment needs, as it ran."""
    try:
        config = ExperimentSpec.model_validate_json(job.exp_path.read_bytes()).config
    except (OSError, ValidationError):
        return {EXP_FILE: "unreadable"}
    values: dict[str, object] = {
        key: getattr(config, key)
        for key in (
            "model",
            "backend",
            "precision",
            "quantization",
            "batch_size",
            "n_prompts",
            "max_input_tokens",
            "max_output_tokens",
        )
    }
    section = getattr(config, config.backend, None)
    if section is not None:
        for key, value in section.model_dump(exclude_none=True).items():
            values[f"{config.backend}.{key}"] = value
    return values


def how_stopped(outcome: Outcome) -> str:
    """What became of a worker asked to stop (runners: interrupt)."""
    code = outcome.returncode
    if code is None and not outcome.timed_out:
        return "stopped before its worker started"
    if code in {130, -signal.SIGINT}:  # its KeyboardInterrupt (docker: exit 130 as -2)
        return "the worker cleaned up and stopped"
    if code == -signal.SIGTERM:  # before it set up its handler: nothing to clean up yet
        return "the worker was stopped by SIGTERM as it started"
    if code == -signal.SIGKILL:
        return "the worker did not stop within the grace period and was killed"
    return f"the worker {describe_exit(code)}"


def describe_exit(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def log_text(out_dir: Path) -> str:
    try:
        return (out_dir / LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def log_tail(out_dir: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not (out_dir / LOG_FILE).is_file():
        return "(no worker log)"
    tail = log_text(out_dir).strip().splitlines()[-lines:]
    return "Log tail: " + " | ".join(tail) if tail else "(worker log is empty)"
