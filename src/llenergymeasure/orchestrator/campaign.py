"""The campaign loop: lay out a campaign directory, then run every entry that has not ended.

Layout of a campaign directory:
    campaign.yaml                 copy of the file it was started from
    experiments.json              every experiment's config (see experiments.py)
    manifest.json                 state (see manifest.py), with manifest.journal: changes since
    lem.lock                      while an orchestrator runs it (see lock.py)
    <experiment_id>/cycle-<n>/    exp.json (written when it runs), worker.log, result.json |
                                  error.json
    results.csv, results.parquet  one row per experiment and cycle
    summary.csv, summary.parquet  statistics across cycles (results/aggregate.py)
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Literal, cast

import pandas as pd
import yaml
from pydantic import ValidationError

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config.campaign import SettingsRecord
from llenergymeasure.config.experiment import config_hash
from llenergymeasure.config.grid import Campaign, PlannedExperiment
from llenergymeasure.config.settings import UserSettings, load_settings, resolve_settings
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.contract import ERROR_FILE, EXP_FILE, LOG_FILE, RESULT_FILE
from llenergymeasure.datasets.select import check_available
from llenergymeasure.errors import ConfigError
from llenergymeasure.faults import crashpoint
from llenergymeasure.gc_pause import gc_paused
from llenergymeasure.oom import log_says_out_of_memory
from llenergymeasure.orchestrator.dispatch import Dispatcher, StopRequest, WaitEvents
from llenergymeasure.orchestrator.experiments import ExperimentSpecs, write_experiments
from llenergymeasure.orchestrator.lock import CampaignLock
from llenergymeasure.orchestrator.manifest import (
    Attempt,
    AttemptStatus,
    Manifest,
    ManifestEntry,
    ManifestStore,
    SkippedEntry,
    Status,
    utcnow,
)
from llenergymeasure.orchestrator.runners import Job, Outcome, Runner
from llenergymeasure.orchestrator.schedule import check_gpu_needs, resolve_execution, run_order
from llenergymeasure.orchestrator.thermal import TemperatureProbe, read_gpu_temperatures
from llenergymeasure.results.aggregate import summarize, write_summary
from llenergymeasure.results.collate import collate
from llenergymeasure.results.schema import ErrorRecord, ExperimentResult, schema_fingerprint

LOG_TAIL_LINES = 15
STOP_GRACE_S = 60.0
"""How long a worker asked to stop (first Ctrl+C) may take to clean up before it is killed:
long enough for an engine to free the GPU and end its processes."""


@dataclass
class RunSummary:
    campaign_dir: Path
    manifest: Manifest
    ran: list[ManifestEntry] = field(default_factory=list)
    recovered: list[ManifestEntry] = field(default_factory=list)
    interrupted: bool = False
    statistics: pd.DataFrame | None = None
    """summary.csv's table, once the campaign stops."""

    @property
    def failed(self) -> list[ManifestEntry]:
        """Entries that ended without a result on their own (failed, oom)."""
        return self.manifest.failed()


class Events(WaitEvents):
    """Progress callbacks; the CLI draws them, the library API stays quiet."""

    def notice(self, message: str) -> None:
        """Called with a one-line notice, such as which runner was picked and why."""

    def campaign_started(self, manifest: Manifest, to_run: list[ManifestEntry]) -> None:
        """Called once the entries to run are known."""

    def experiment_started(self, entry: ManifestEntry) -> None:
        """Called just before a worker starts."""

    def experiment_finished(self, entry: ManifestEntry, result: ExperimentResult | None) -> None:
        """Called once the entry's final status is saved."""

    def experiment_retried(self, entry: ManifestEntry, attempt: int, of: int) -> None:
        """Called when a failed entry (its error says why) runs again: attempt `attempt` of
        at most `of` in this run."""


def create_campaign(
    campaign: Campaign,
    output_root: Path | None = None,
    *,
    default_cycles: int = 1,
    settings: UserSettings | None = None,
    runner_name: str | None = None,
) -> Path:
    """Make the campaign directory: experiments.json and a manifest of pending entries, in the
    order they will run (each exp.json is written when its entry runs). default_cycles
    applies where the file sets no `cycles` (the conductor passes its one default); settings
    are the resolved ones (default: `.lem-config.yaml` and the environment resolved against
    the campaign); runner_name: the runner picked for it (recorded in each entry)."""
    if settings is None:
        settings = resolve_settings(load_settings(), campaign.config)
    execution = resolve_execution(campaign.config, settings)
    _check_prompts(campaign)
    root = Path(output_root or campaign.config.output_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    campaign_id = f"{campaign.config.name}_{stamp}"
    campaign_dir = root / campaign_id
    suffix = 1
    while campaign_dir.exists():
        suffix += 1
        campaign_dir = root / f"{campaign_id}-{suffix}"
    campaign_id = campaign_dir.name
    try:
        campaign_dir.mkdir(parents=True)
    except OSError as e:
        raise ConfigError(f"cannot create campaign directory {campaign_dir}: {e}") from e
    campaign_dir = campaign_dir.resolve()
    if campaign.source is not None:
        shutil.copyfile(campaign.source, campaign_dir / "campaign.yaml")
    else:  # given as data: keep what was given, as a file that `lem campaign` could run
        given = campaign.config.model_dump(mode="json", exclude_unset=True)
        write_text_atomic(campaign_dir / "campaign.yaml", yaml.safe_dump(given, sort_keys=False))

    with gc_paused():  # 100,000 entries: see gc_pause.py
        write_experiments(campaign_dir, campaign.base_dir, campaign.experiments)
        fingerprint = schema_fingerprint()
        cycles = campaign.config.cycles or default_cycles
        order = run_order(len(campaign.experiments), cycles, execution.order, execution.order_seed)
        runner = runner_name or settings.runner or "auto"
        entries = [
            ManifestEntry(
                experiment_id=exp.experiment_id,
                cycle=cycle,
                backend=exp.config.backend,
                label=exp.label,
                runner=runner,
                exp_path=f"{exp.experiment_id}/cycle-{cycle}/{EXP_FILE}",
            )
            for exp, cycle in ((campaign.experiments[i], c) for i, c in order)
        ]
        now = utcnow()
        manifest = Manifest(
            campaign_id=campaign_id,
            campaign_name=campaign.config.name,
            config_hash=config_hash(
                {
                    "campaign": campaign.config.model_dump(mode="json"),
                    "experiments": [e.experiment_id for e in campaign.experiments],
                }
            ),
            schema_fingerprint=fingerprint,
            created_at=now,
            updated_at=now,
            total_cycles=cycles,
            timeout_s=campaign.config.timeout_s,
            retries=campaign.config.retries,
            execution=execution,
            runner_choice=campaign.config.runner,
            cold_start=campaign.config.cold_start,
            entries=entries,
            skipped=[SkippedEntry(label=s.label, reason=s.reason) for s in campaign.skipped],
        )
        ManifestStore(campaign_dir).save(manifest)
    return campaign_dir


def _check_prompts(campaign: Campaign) -> None:
    """Each prompt source must hold the most prompts any experiment asks of it: checked once per
    source, not once per experiment (a source may be a file to read)."""
    most: dict[tuple[str, str | None, int | None], PlannedExperiment] = {}
    for exp in campaign.experiments:
        prompts = exp.config.prompts
        source = (prompts.source, prompts.path, prompts.input_tokens)
        if source not in most or exp.config.n_prompts > most[source].config.n_prompts:
            most[source] = exp
    for exp in most.values():
        check_available(exp.config, campaign.base_dir)


def run_campaign_dir(
    campaign_dir: Path,
    *,
    events: Events | None = None,
    runner: Runner | None = None,
    timeout_s: float | None = None,
    gpus: tuple[int, ...] | None = None,
    probe: TemperatureProbe = read_gpu_temperatures,
    retries: int | None = None,
    retry_failed: bool = False,
    force_unlock: bool = False,
    stop_grace_s: float = STOP_GRACE_S,
    record: SettingsRecord | None = None,
) -> RunSummary:
    """Run every entry of the campaign that has not ended (see Manifest.pending; failed and
    oom ones too with retry_failed); safe to call again after a crash. With gpus, up to one
    experiment per GPU runs at a time, each pinned to its own GPU(s). retries (default: the
    campaign file's) gives a failed entry that many more attempts in this call.

    Holds the campaign's lock while it runs (another orchestrator is refused). From the main
    thread, the first SIGINT or SIGTERM stops it gracefully: nothing new starts, each running
    worker is sent SIGTERM, so it unwinds (freeing the GPU, ending engine processes) and
    exits, and is killed if it has not within stop_grace_s; its entry ends `interrupted`. A
    second signal stops at once: running workers are killed. Either way the manifest and the
    tables are written before it returns. record: the settings this run goes on with (a
    resume's, overrides included), saved in the manifest's execution once the lock is held."""
    events = events or Events()
    with CampaignLock(campaign_dir, force=force_unlock, notice=events.notice):
        crashpoint("campaign.locked")
        return _run_locked(
            campaign_dir,
            events,
            runner,
            _Settings(timeout_s, gpus, probe, retries, retry_failed, stop_grace_s),
            record,
        )


@dataclass(frozen=True)
class _Settings:
    timeout_s: float | None
    gpus: tuple[int, ...] | None
    probe: TemperatureProbe
    retries: int | None
    retry_failed: bool
    stop_grace_s: float


def _run_locked(
    campaign_dir: Path,
    events: Events,
    runner: Runner | None,
    settings: _Settings,
    record: SettingsRecord | None = None,
) -> RunSummary:
    store = ManifestStore(campaign_dir)
    manifest = store.load()
    if record is not None:
        manifest.execution = manifest.execution.model_copy(update={"settings": record})
    if manifest.schema_fingerprint != schema_fingerprint():
        raise ConfigError(
            f"{campaign_dir} was created by a version of llenergymeasure with another result "
            f"schema ({manifest.schema_fingerprint} vs {schema_fingerprint()}); "
            "finish it with that version"
        )
    for torn in campaign_dir.glob(".*.tmp"):  # writes a crash cut short; nobody else writes
        torn.unlink(missing_ok=True)
    summary = RunSummary(campaign_dir=campaign_dir, manifest=manifest)
    specs = ExperimentSpecs(campaign_dir)
    _settle(campaign_dir, manifest, summary, events)
    to_run = manifest.pending(settings.retry_failed)
    needs: dict[str, int] = {}
    if settings.gpus is not None:
        for entry in to_run:
            needs[entry.experiment_id] = specs.config(entry.experiment_id).gpus_required()
        check_gpu_needs(list(needs.items()), settings.gpus)
    store.save(manifest)  # folds in the journal of an earlier run, with what was settled
    events.campaign_started(manifest, to_run)
    _CampaignRun(store, specs, manifest, summary, events, settings).run(runner, to_run, needs)
    return summary


class _CampaignRun:
    """One pass of the run loop over a loaded manifest; the dispatcher calls back into it."""

    def __init__(
        self,
        store: ManifestStore,
        specs: ExperimentSpecs,
        manifest: Manifest,
        summary: RunSummary,
        events: Events,
        settings: _Settings,
    ) -> None:
        self.store, self.specs, self.manifest, self.summary = store, specs, manifest, summary
        self.events, self.settings = events, settings
        self.campaign_dir = summary.campaign_dir
        retries = settings.retries if settings.retries is not None else manifest.retries
        self.attempts_allowed = 1 + retries
        self.tries: Counter[str] = Counter()
        self.stop = StopRequest()
        self.runner_name = ""

    def run(
        self, runner: Runner | None, to_run: list[ManifestEntry], needs: dict[str, int]
    ) -> None:
        gpus, stop = self.settings.gpus, self.stop
        with _signals_stop(stop):
            try:
                # The runner exits first (stopping what still runs), then threads are joined.
                with (
                    ThreadPoolExecutor(max_workers=len(gpus or (None,))) as executor,
                    runner
                    or _default_runner(
                        self.campaign_dir, self.events, self.settings.retry_failed
                    ) as active,
                ):
                    self.runner_name = active.name
                    Dispatcher(
                        execution=self.manifest.execution,
                        runner=active,
                        executor=executor,
                        prepare=self.prepare,
                        complete=self.complete,
                        events=self.events,
                        gpus=gpus,
                        needs=needs,
                        probe=self.settings.probe,
                        stop=stop,
                        stop_grace_s=self.settings.stop_grace_s,
                    ).run(to_run)
            except KeyboardInterrupt:
                stop.reason = stop.reason or "SIGINT"
                # A second signal: the runner killed every worker before `complete` saw it.
                reason = f"stopped at once by a second {stop.reason}; worker killed"
                for entry in self.manifest.entries:
                    if entry.status == "running" and not _recover(
                        self.campaign_dir, self.manifest, entry
                    ):
                        _end_attempt(entry, "interrupted", reason)
            finally:
                stop.hard_stop_allowed = False
                self.summary.interrupted = stop.reason is not None
                self.store.save(self.manifest)  # the journal folded into one snapshot
                crashpoint("campaign.before_collate")
                runs = collate(self.campaign_dir, self.manifest)
                self.summary.statistics = summarize(runs, self.manifest.execution.statistics)
                write_summary(self.campaign_dir, self.summary.statistics)
                crashpoint("campaign.after_summary")

    def prepare(
        self, entry: ManifestEntry, pinned: tuple[int, ...] | None, notes: list[str]
    ) -> Job:
        job = _prepare_entry(
            self.specs, self.manifest, entry, self.runner_name, self.settings.timeout_s
        )
        entry.gpus, entry.warnings = (list(pinned) if pinned else None), notes
        crashpoint("campaign.before_start_save")
        self.store.update(self.manifest, entry)
        crashpoint("campaign.after_start_save")
        self.events.experiment_started(entry)
        return dataclasses.replace(job, gpus=pinned)

    def complete(self, entry: ManifestEntry, job: Job, outcome: Outcome) -> bool:
        """Save how the attempt ended; True: run it again (a retry)."""
        retryable, result = _complete_entry(entry, job, outcome, self.manifest, self.stop.reason)
        crashpoint("campaign.before_complete_save")
        self.store.update(self.manifest, entry)
        crashpoint("campaign.after_complete_save")
        self.tries[entry.key] += 1
        tries = self.tries[entry.key]
        if retryable and tries < self.attempts_allowed and self.stop.reason is None:
            self.events.experiment_retried(entry, tries + 1, self.attempts_allowed)
            return True
        self.summary.ran.append(entry)
        self.events.experiment_finished(entry, result)
        return False


@contextlib.contextmanager
def _signals_stop(stop: StopRequest) -> Iterator[None]:
    """SIGINT and SIGTERM: the first asks for a graceful stop, the second stops at once.
    Outside the main thread (a library caller's thread) signals cannot be handled here and
    keep their default behaviour."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.reason is None:
            stop.reason = signal.Signals(signum).name
        elif stop.hard_stop_allowed:
            stop.hard_stop_allowed = False
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        stop.hard_stop_allowed = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _default_runner(campaign_dir: Path, events: Events, retry_failed: bool) -> Runner:
    """The runner the campaign recorded (the conductor passes the one it planned)."""
    from llenergymeasure.orchestrator.runners.select import Workload, plan_runner

    workload = Workload.of_campaign_dir(campaign_dir, retry_failed)
    recorded = ManifestStore(campaign_dir).load().execution.settings
    settings = load_settings()
    plan = plan_runner(workload, settings.restored(recorded) if recorded else settings)
    for message in plan.notices:
        events.notice(message)
    return plan.open(campaign_dir)


def _settle(campaign_dir: Path, manifest: Manifest, summary: RunSummary, events: Events) -> None:
    """Before anything runs: make the manifest say what the files say.

    - `running` (its orchestrator died): done if its result.json is complete, else
      `interrupted`, the lost attempt in its history;
    - not done but with a complete result.json (a crash between the result and the manifest
      update): done, not run again;
    - `done` whose result.json is gone (deleted, or a lost disk): pending again, with a notice.
    """
    for entry in manifest.entries:
        if entry.status == "done":
            if entry.result_path and (campaign_dir / entry.result_path).is_file():
                continue
            events.notice(f"{entry.key} was done but its result.json is missing: it runs again")
            entry.attempt_history.append(
                Attempt(
                    attempt=entry.attempts,
                    status="lost",
                    reason="result.json missing after the entry was done",
                    runner=entry.runner,
                    started_at=entry.started_at,
                    finished_at=entry.finished_at,
                )
            )
            entry.status, entry.result_path = "pending", None
        elif _recover(campaign_dir, manifest, entry):
            summary.recovered.append(entry)
        elif entry.status == "running":
            _end_attempt(
                entry,
                "lost",
                "the orchestrator stopped while it ran (killed or crashed); no result",
                final="interrupted",
            )


def _prepare_entry(
    specs: ExperimentSpecs,
    manifest: Manifest,
    entry: ManifestEntry,
    runner_name: str,
    timeout_s: float | None,
) -> Job:
    """Write the entry's exp.json for a new attempt, mark it running (the caller records it)
    and describe it as a Job."""
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
    entry.container_start_s = None
    return Job(
        exp_path=exp_path,
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


def _complete_entry(
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
    if outcome.container_start_s:
        entry.container_start_s = round(outcome.container_start_s, 3)
    result = _complete_result(job.output_dir, manifest, entry)
    if result is not None:
        if outcome.returncode != 0:
            how = "timed out" if outcome.timed_out else _describe_exit(outcome.returncode)
            entry.warnings = [
                *entry.warnings,
                f"the worker {how} after writing a complete result.json; the result is kept",
            ]
        entry.result_path = str(Path(entry.exp_path).parent / RESULT_FILE)
        _end_attempt(entry, "done", None)
        return False, result
    if stop_reason is not None:
        _end_attempt(entry, "interrupted", f"interrupted by {stop_reason}: {_how_stopped(outcome)}")
        return False, None
    failure = _failure(job, outcome)
    _end_attempt(entry, failure.status, failure.reason)
    return failure.retryable, None


def _end_attempt(
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
            started_at=entry.started_at,
            finished_at=entry.finished_at,
        )
    )
    entry.status = final or cast(Status, how)
    entry.error = reason


def _recover(campaign_dir: Path, manifest: Manifest, entry: ManifestEntry) -> bool:
    """An entry not done whose result.json is complete finished before a crash: mark it done
    (its history says so) without running it again."""
    if entry.status == "done":
        return False
    out_dir = (campaign_dir / entry.exp_path).parent
    if _complete_result(out_dir, manifest, entry) is None:
        return False
    entry.result_path = str(Path(entry.exp_path).parent / RESULT_FILE)
    if entry.status != "running":  # e.g. failed, then the result turned up: say so
        entry.warnings = [*entry.warnings, f"recovered from a {entry.status} state"]
    finished = entry.finished_at
    _end_attempt(entry, "done", None)
    entry.error = None
    entry.finished_at = finished or entry.finished_at
    entry.attempt_history[-1].reason = "recovered: result.json was complete when it was stopped"
    return True


def _complete_result(
    out_dir: Path, manifest: Manifest, entry: ManifestEntry
) -> ExperimentResult | None:
    """The entry's result.json if it is complete: valid, for this campaign, experiment and
    cycle, and with its time-series file where it names one. Else None: the directory holds
    a cut-short attempt, which runs again."""
    result = _read_result(out_dir / RESULT_FILE)
    if result is None:
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


def _read_result(path: Path) -> ExperimentResult | None:
    try:
        return ExperimentResult.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


@dataclass(frozen=True)
class _Failure:
    status: Literal["failed", "oom"]
    reason: str
    retryable: bool
    """Another attempt may end differently: not for a configuration error or running out of
    memory, which recur with the same configuration (`lem resume --retry-failed` reruns them
    on request)."""


def _failure(job: Job, outcome: Outcome) -> _Failure:
    out_dir = job.output_dir
    if outcome.timed_out:
        reason = f"timed out after {job.timeout_s:g} s; worker killed. {_log_tail(out_dir)}"
        return _Failure("failed", reason, True)
    try:
        record: ErrorRecord | None = ErrorRecord.model_validate_json(
            (out_dir / ERROR_FILE).read_bytes()
        )
    except (OSError, ValidationError):
        record = None
    log_oom = log_says_out_of_memory(_log_text(out_dir)[-20_000:])
    if (record is not None and record.category == "oom") or log_oom:
        # the worker's own error, or (an engine's child process ran out) the log's line
        worker_said = record is not None and record.category == "oom"
        cause = f"{record.error_type}: {record.message}" if record and worker_said else log_oom
        settings = ", ".join(f"{k}={v}" for k, v in _memory_settings(job).items())
        return _Failure("oom", f"out of memory with {settings}. {cause}", False)
    if record is not None:
        reason = f"{record.error_type}: {record.message}"
        return _Failure("failed", reason, record.category != "config")
    how = _describe_exit(outcome.returncode)
    if outcome.returncode == -signal.SIGKILL:
        how += " (not sent by lem: often the kernel's out-of-memory killer)"
    reason = f"worker {how} without writing a result. {_log_tail(out_dir)}"
    return _Failure("failed", reason, True)


def _memory_settings(job: Job) -> dict[str, object]:
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


def _how_stopped(outcome: Outcome) -> str:
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
    return f"the worker {_describe_exit(code)}"


def _describe_exit(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _log_text(out_dir: Path) -> str:
    try:
        return (out_dir / LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _log_tail(out_dir: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not (out_dir / LOG_FILE).is_file():
        return "(no worker log)"
    tail = _log_text(out_dir).strip().splitlines()[-lines:]
    return "Log tail: " + " | ".join(tail) if tail else "(worker log is empty)"
