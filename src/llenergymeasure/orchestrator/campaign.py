"""The campaign loop: run every entry of a campaign directory that has not ended, with
signals handled and the manifest kept true to the files.

The directory's layout is made by layout.py; the state changes of an entry by entries.py;
what a failure was, by diagnose.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd

from llenergymeasure.config.campaign import SettingsRecord
from llenergymeasure.config.settings import load_settings
from llenergymeasure.errors import ConfigError
from llenergymeasure.faults import crashpoint
from llenergymeasure.orchestrator.adopt import (
    Adopted,
    held_jobs,
    held_keys,
    refuse_other_runner,
    wait_adopted,
)
from llenergymeasure.orchestrator.dispatch import Dispatcher, StopRequest, WaitEvents
from llenergymeasure.orchestrator.entries import complete_entry, end_attempt, prepare_entry, recover
from llenergymeasure.orchestrator.experiments import ExperimentSpecs
from llenergymeasure.orchestrator.lock import CampaignLock
from llenergymeasure.orchestrator.manifest import (
    Attempt,
    Manifest,
    ManifestEntry,
    ManifestStore,
)
from llenergymeasure.orchestrator.runners import AdoptingRunner, Job, Outcome, Runner
from llenergymeasure.orchestrator.schedule import check_gpu_needs
from llenergymeasure.orchestrator.thermal import TemperatureProbe, read_gpu_temperatures
from llenergymeasure.results.aggregate import summarize, write_summary
from llenergymeasure.results.collate import collate, failed_levels
from llenergymeasure.results.schema import ExperimentResult, schema_fingerprint

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
    failed_levels: list[dict[str, Any]] = field(default_factory=list)
    """Server levels that failed (results.collate.failed_levels), once the campaign stops."""

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
    devices: Callable[[Events], contextlib.AbstractContextManager[object]] | None = None,
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
    resume's, overrides included), saved in the manifest's execution once the lock is held.
    devices(events): the host-wide device locks (gpu_locks.py), taken after the campaign's own
    lock (a second orchestrator of this campaign is refused, not made to wait) and held to
    the end."""
    events = events or Events()
    with (
        CampaignLock(campaign_dir, force=force_unlock, notice=events.notice),
        devices(events) if devices is not None else contextlib.nullcontext(),
    ):
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
    held = _settle(campaign_dir, manifest, summary, events, runner)
    keys = held_keys(held)
    to_run = [e for e in manifest.pending(settings.retry_failed) if e.key not in keys]
    needs: dict[str, int] = {}
    if settings.gpus is not None:
        for entry in to_run:
            needs[entry.experiment_id] = specs.config(entry.experiment_id).gpus_required()
        check_gpu_needs(list(needs.items()), settings.gpus)
    store.save(manifest)  # folds in the journal of an earlier run, with what was settled
    events.campaign_started(manifest, [a.entry for a in held] + to_run)
    _CampaignRun(store, specs, manifest, summary, events, settings).run(runner, to_run, needs, held)
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
        self,
        runner: Runner | None,
        to_run: list[ManifestEntry],
        needs: dict[str, int],
        held: list[Adopted] | None = None,
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
                    if held:  # submitted before (killed orchestrator, --detach): waited for
                        assert isinstance(active, AdoptingRunner)  # else _settle refused
                        again = wait_adopted(
                            held,
                            active,
                            executor,
                            self.complete,
                            self.events,
                            stop,
                            self.settings.stop_grace_s,
                        )
                        to_run = [] if stop.reason else again + to_run
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
                    if entry.status == "running" and not recover(
                        self.campaign_dir, self.manifest, entry
                    ):
                        end_attempt(entry, "interrupted", reason)
            finally:
                stop.hard_stop_allowed = False
                self.summary.interrupted = stop.reason is not None
                self.store.save(self.manifest)  # the journal folded into one snapshot
                crashpoint("campaign.before_collate")
                runs = collate(self.campaign_dir, self.manifest)
                self.summary.statistics = summarize(runs, self.manifest.execution.statistics)
                self.summary.failed_levels = failed_levels(runs)
                write_summary(self.campaign_dir, self.summary.statistics)
                crashpoint("campaign.after_summary")

    def prepare(
        self, entry: ManifestEntry, pinned: tuple[int, ...] | None, notes: list[str]
    ) -> Job:
        job = prepare_entry(
            self.specs, self.manifest, entry, self.runner_name, self.settings.timeout_s
        )
        entry.gpus, entry.warnings = (list(pinned) if pinned else None), notes
        crashpoint("campaign.before_start_save")
        self.store.update(self.manifest, entry)
        crashpoint("campaign.after_start_save")
        self.events.experiment_started(entry)

        def submitted(job_id: str) -> None:  # a batch runner's job id, recorded at once
            entry.job_id = job_id
            self.store.update(self.manifest, entry)

        return dataclasses.replace(job, gpus=pinned, on_submitted=submitted)

    def complete(self, entry: ManifestEntry, job: Job, outcome: Outcome) -> bool:
        """Save how the attempt ended; True: run it again (a retry)."""
        retryable, result = complete_entry(entry, job, outcome, self.manifest, self.stop.reason)
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


def _settle(
    campaign_dir: Path,
    manifest: Manifest,
    summary: RunSummary,
    events: Events,
    runner: Runner | None = None,
) -> list[Adopted]:
    """Before anything runs: make the manifest say what the files say; returns the entries
    whose batch job is still known (adopt.py), which are waited for, not run again.

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
        elif recover(campaign_dir, manifest, entry):
            summary.recovered.append(entry)
    held = held_jobs(campaign_dir, manifest)
    if held and runner is not None and not isinstance(runner, AdoptingRunner):
        refuse_other_runner(held, runner)  # none still runs: those attempts are lost
        held = []
    keys = held_keys(held)
    for entry in manifest.entries:
        if entry.status == "running" and entry.key not in keys:
            end_attempt(
                entry,
                "lost",
                "the orchestrator stopped while it ran (killed or crashed); no result",
                final="interrupted",
            )
    return held
