"""State changes of one manifest entry: an attempt starts (exp.json written, status running),
ends (done, failed, oom, interrupted, lost: each kept in its history), or turns out to have
finished before a crash (its result.json complete: recovered, not run again)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import cast

from pydantic import ValidationError

from llenergymeasure.contract import ERROR_FILE, LOG_FILE, RESULT_FILE
from llenergymeasure.errors import ConfigError
from llenergymeasure.orchestrator.diagnose import describe_exit, diagnose, how_stopped
from llenergymeasure.orchestrator.experiments import ExperimentSpecs
from llenergymeasure.orchestrator.manifest import (
    Attempt,
    AttemptStatus,
    Manifest,
    ManifestEntry,
    Status,
    utcnow,
)
from llenergymeasure.orchestrator.runners import Job, Outcome
from llenergymeasure.results.schema import ExperimentResult


def prepare_entry(
    specs: ExperimentSpecs,
    manifest: Manifest,
    entry: ManifestEntry,
    runner_name: str,
    timeout_s: float | None,
) -> Job:
    """Write the entry's exp.json for a new attempt, mark it running (the caller records it)
    and describe it as a Job."""
    check_entry_folder(specs.campaign_dir, entry)
    out_dir = (specs.campaign_dir / entry.exp_path).parent
    for stale in (RESULT_FILE, ERROR_FILE):
        (out_dir / stale).unlink(missing_ok=True)
    for torn in out_dir.glob(".*.tmp"):  # a write cut short by a crash
        torn.unlink(missing_ok=True)
    exp_path = specs.write_spec(manifest, entry, attempt=entry.attempts + 1)
    entry.attempts += 1
    entry.status, entry.runner = "running", runner_name
    entry.started_at, entry.finished_at, entry.error = utcnow(), None, None
    entry.container_name = entry.container_id = entry.image_digest = None
    entry.job_id = entry.job_node = None
    entry.job_gpus = None
    entry.container_start_s = None
    return entry_job(specs.campaign_dir, manifest, entry, timeout_s, exp_path)


def check_entry_folder(campaign_dir: Path, entry: ManifestEntry) -> None:
    """What a run writes stays in real folders of the campaign (issue 27.4, 27.9): a link, or a
    file where a folder belongs, is refused before anything is written, never written through.
    (exp.json is replaced by rename and stale results unlinked: a link there is harmless.)"""
    cycle_dir = (campaign_dir / entry.exp_path).parent
    for path, folder in (
        (cycle_dir.parent, True),
        (cycle_dir, True),
        (cycle_dir / LOG_FILE, False),
    ):
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return
        if stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode):
            continue
        what = (
            "a symbolic link" if stat.S_ISLNK(mode) else "not a " + ("folder" if folder else "file")
        )
        raise ConfigError(
            f"{path} is {what}, where {entry.key} keeps its {'folder' if folder else 'log'}; "
            "lem writes only into the campaign's own folders: move it away, then resume"
        )


def entry_job(
    campaign_dir: Path,
    manifest: Manifest,
    entry: ManifestEntry,
    timeout_s: float | None,
    exp_path: Path | None = None,
) -> Job:
    """The Job of the entry's current attempt (its exp.json already written): also how a
    resume describes an attempt a batch scheduler still runs, to wait for it."""
    out_dir = (campaign_dir / entry.exp_path).parent
    return Job(
        exp_path=exp_path or campaign_dir / entry.exp_path,
        output_dir=out_dir,
        log_path=out_dir / LOG_FILE,
        env={
            "LEM_CAMPAIGN_ID": manifest.campaign_id,
            "LEM_CYCLE": str(entry.cycle),
            "LEM_TOTAL_CYCLES": str(manifest.total_cycles),
            "LEM_EXPERIMENT_ID": entry.experiment_id,
            "LEM_ATTEMPT": str(entry.attempts),
        },
        timeout_s=timeout_s or manifest.timeout_s,
    )


def complete_entry(
    entry: ManifestEntry,
    job: Job,
    outcome: Outcome,
    manifest: Manifest,
    stop_reason: str | None,
) -> tuple[bool, ExperimentResult | None]:
    """Record how the attempt ended (the caller saves): whether another attempt may help, and
    the complete result when there is one.

    A complete result.json is the ground truth: the entry is done even when the worker then
    exited badly (a crash at interpreter exit, a kill just after the write), with a warning."""
    if outcome.container is not None:
        entry.container_name = outcome.container.name
        entry.container_id = outcome.container.id
        entry.image_digest = outcome.container.image_digest
    if outcome.job is not None:
        entry.job_id, entry.job_node, entry.job_gpus = (
            outcome.job.id,
            outcome.job.node,
            outcome.job.gpus,
        )
    if outcome.container_start_s:
        entry.container_start_s = round(outcome.container_start_s, 3)
    result = complete_result(job.output_dir, manifest, entry)
    if result is not None:
        if outcome.returncode != 0:
            how = "timed out" if outcome.timed_out else describe_exit(outcome.returncode)
            entry.warnings = [
                *entry.warnings,
                f"the worker {how} after writing a complete result.json; the result is kept",
            ]
        entry.result_path = str(Path(entry.exp_path).parent / RESULT_FILE)
        end_attempt(entry, "done", None)
        return False, result
    if stop_reason is not None:
        end_attempt(entry, "interrupted", f"interrupted by {stop_reason}: {how_stopped(outcome)}")
        return False, None
    failure = diagnose(job, outcome)
    end_attempt(entry, failure.status, failure.reason)
    return failure.retryable, None


def end_attempt(
    entry: ManifestEntry,
    how: AttemptStatus,
    reason: str | None,
    *,
    final: Status | None = None,
) -> None:
    """Close the entry's current attempt: its history, status (final, else how), error and
    finish time."""
    entry.finished_at = utcnow() if how != "lost" else None
    entry.attempt_history.append(
        Attempt(
            attempt=entry.attempts,
            status=how,
            reason=reason,
            runner=entry.runner,
            job_id=entry.job_id,
            started_at=entry.started_at,
            finished_at=entry.finished_at,
        )
    )
    entry.status = final or cast(Status, how)
    entry.error = reason


def recover(campaign_dir: Path, manifest: Manifest, entry: ManifestEntry) -> bool:
    """An entry not done whose result.json is complete finished before a crash: mark it done
    (its history says so) without running it again."""
    if entry.status == "done":
        return False
    out_dir = (campaign_dir / entry.exp_path).parent
    if complete_result(out_dir, manifest, entry) is None:
        return False
    entry.result_path = str(Path(entry.exp_path).parent / RESULT_FILE)
    if entry.status != "running":  # e.g. failed, then the result turned up: say so
        entry.warnings = [*entry.warnings, f"recovered from a {entry.status} state"]
    finished = entry.finished_at
    end_attempt(entry, "done", None)
    entry.error = None
    entry.finished_at = finished or entry.finished_at
    entry.attempt_history[-1].reason = "recovered: result.json was complete when it was stopped"
    return True


def complete_result(
    out_dir: Path, manifest: Manifest, entry: ManifestEntry
) -> ExperimentResult | None:
    """The entry's result.json if it is complete: valid, for this campaign, experiment and
    cycle, and with its time-series file where it names one. Else None: the directory holds
    a cut-short attempt, which runs again."""
    result = read_result(out_dir / RESULT_FILE)
    if result is None or result.partial:  # a failed server experiment's finished levels
        return None
    if (result.campaign_id, result.experiment_id, result.cycle) != (
        manifest.campaign_id,
        entry.experiment_id,
        entry.cycle,
    ):
        return None
    if result.timeseries_file and not (out_dir / result.timeseries_file).is_file():
        return None
    return result


def read_result(path: Path) -> ExperimentResult | None:
    try:
        return ExperimentResult.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None
