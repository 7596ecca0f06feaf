"""The campaign loop: lay out a campaign directory, then run every entry that is not done.

Layout of a campaign directory:
    campaign.yaml                 copy of the file it was started from
    manifest.json                 state (see manifest.py)
    <experiment_id>/cycle-<n>/    exp.json, worker.log, result.json | error.json
    results.csv, results.parquet  one row per experiment and cycle
    summary.csv, summary.parquet  statistics across cycles (results/aggregate.py)
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml
from pydantic import ValidationError

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config.experiment import config_hash
from llenergymeasure.config.grid import Campaign
from llenergymeasure.config.settings import UserSettings, load_settings
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.datasets.select import check_available
from llenergymeasure.errors import ConfigError
from llenergymeasure.orchestrator.dispatch import Dispatcher, WaitEvents
from llenergymeasure.orchestrator.manifest import (
    Manifest,
    ManifestEntry,
    ManifestStore,
    utcnow,
)
from llenergymeasure.orchestrator.runners import Job, Outcome, Runner
from llenergymeasure.orchestrator.schedule import check_gpu_needs, resolve_execution, run_order
from llenergymeasure.orchestrator.thermal import TemperatureProbe, read_gpu_temperatures
from llenergymeasure.results.aggregate import summarize, write_summary
from llenergymeasure.results.collate import collate
from llenergymeasure.results.schema import ErrorRecord, ExperimentResult, schema_fingerprint

EXP_FILE = "exp.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
LOG_FILE = "worker.log"
CACHE_DIR = ".cache"
LOG_TAIL_LINES = 15


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
        return [e for e in self.manifest.entries if e.status == "failed"]


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


def create_campaign(
    campaign: Campaign,
    output_root: Path | None = None,
    *,
    default_cycles: int = 1,
    settings: UserSettings | None = None,
) -> Path:
    """Make the campaign directory with every exp.json and a manifest of pending entries, in
    the order they will run. default_cycles applies where the file sets no `cycles` (the CLI
    passes 3); settings default to `.lem-config.yaml` in the working directory."""
    execution = resolve_execution(campaign.config, settings or load_settings())
    for exp in campaign.experiments:
        check_available(exp.config, campaign.base_dir)
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

    fingerprint = schema_fingerprint()
    cycles = campaign.config.cycles or default_cycles
    entries: list[ManifestEntry] = []
    order = run_order(len(campaign.experiments), cycles, execution.order, execution.order_seed)
    for index, cycle in order:
        exp = campaign.experiments[index]
        rel_dir = Path(exp.experiment_id) / f"cycle-{cycle}"
        spec = ExperimentSpec(
            schema_fingerprint=fingerprint,
            experiment_id=exp.experiment_id,
            campaign_id=campaign_id,
            campaign_name=campaign.config.name,
            cycle=cycle,
            total_cycles=cycles,
            attempt=1,
            output_dir=str(campaign_dir / rel_dir),
            base_dir=str(campaign.base_dir),
            cache_dir=str(campaign_dir / CACHE_DIR),
            config=exp.config,
        )
        write_text_atomic(campaign_dir / rel_dir / EXP_FILE, spec.model_dump_json(indent=2))
        entries.append(
            ManifestEntry(
                experiment_id=exp.experiment_id,
                cycle=cycle,
                backend=exp.config.backend,
                label=exp.label,
                runner=campaign.config.runner or "auto",
                exp_path=str(rel_dir / EXP_FILE),
            )
        )
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
        execution=execution,
        runner_choice=campaign.config.runner,
        cold_start=campaign.config.cold_start,
        entries=entries,
    )
    ManifestStore(campaign_dir).save(manifest)
    return campaign_dir


def run_campaign_dir(
    campaign_dir: Path,
    *,
    events: Events | None = None,
    runner: Runner | None = None,
    timeout_s: float | None = None,
    gpus: tuple[int, ...] | None = None,
    probe: TemperatureProbe = read_gpu_temperatures,
) -> RunSummary:
    """Run every entry of the campaign that is not done; safe to call again after a crash.
    With gpus, up to one experiment per GPU runs at a time, each pinned to its own GPU(s)."""
    events = events or Events()
    store = ManifestStore(campaign_dir)
    manifest = store.load()
    if manifest.schema_fingerprint != schema_fingerprint():
        raise ConfigError(
            f"{campaign_dir} was created by a version of llenergymeasure with another result "
            f"schema ({manifest.schema_fingerprint} vs {schema_fingerprint()}); "
            "finish it with that version"
        )
    summary = RunSummary(campaign_dir=campaign_dir, manifest=manifest)
    to_run: list[ManifestEntry] = []
    for entry in manifest.pending():
        if _recover(campaign_dir, entry):
            summary.recovered.append(entry)
        else:
            to_run.append(entry)
    needs: dict[str, int] = {}
    if gpus is not None:
        for entry in to_run:
            needs[entry.experiment_id] = _read_spec(campaign_dir, entry).config.gpus_required()
        check_gpu_needs(list(needs.items()), gpus)
    if summary.recovered:
        store.save(manifest)
    events.campaign_started(manifest, to_run)

    def complete(entry: ManifestEntry, job: Job, outcome: Outcome) -> None:
        _complete_entry(entry, job, outcome, store, manifest)
        summary.ran.append(entry)
        events.experiment_finished(entry, _read_result(job.output_dir / RESULT_FILE))

    try:
        # The runner exits first (stopping what still runs), then the threads are joined.
        with (
            ThreadPoolExecutor(max_workers=len(gpus or (None,))) as executor,
            runner or _default_runner(campaign_dir, events) as active,
        ):

            def prepare(
                entry: ManifestEntry, pinned: tuple[int, ...] | None, notes: list[str]
            ) -> Job:
                job = _prepare_entry(campaign_dir, manifest, entry, active.name, timeout_s)
                entry.gpus, entry.warnings = (list(pinned) if pinned else None), notes
                store.save(manifest)
                events.experiment_started(entry)
                return dataclasses.replace(job, gpus=pinned)

            Dispatcher(
                execution=manifest.execution,
                runner=active,
                executor=executor,
                prepare=prepare,
                complete=complete,
                events=events,
                gpus=gpus,
                needs=needs,
                probe=probe,
            ).run(to_run)
    except KeyboardInterrupt:
        summary.interrupted = True
        for entry in manifest.entries:
            if entry.status == "running":
                entry.status, entry.error = "pending", "interrupted by the user"
        store.save(manifest)
    finally:
        runs = collate(campaign_dir, manifest)
        summary.statistics = summarize(runs, manifest.execution.statistics)
        write_summary(campaign_dir, summary.statistics)
    return summary


def _default_runner(campaign_dir: Path, events: Events) -> Runner:
    """The runner the campaign file or user settings ask for (the CLI plans its own)."""
    from llenergymeasure.config.settings import load_settings
    from llenergymeasure.orchestrator.runners.select import Workload, plan_runner

    plan = plan_runner(Workload.of_campaign_dir(campaign_dir), None, load_settings())
    for message in plan.notices:
        events.notice(message)
    return plan.open(campaign_dir)


def _read_spec(campaign_dir: Path, entry: ManifestEntry) -> ExperimentSpec:
    return ExperimentSpec.model_validate_json((campaign_dir / entry.exp_path).read_bytes())


def _prepare_entry(
    campaign_dir: Path,
    manifest: Manifest,
    entry: ManifestEntry,
    runner_name: str,
    timeout_s: float | None,
) -> Job:
    """Mark the entry running for a new attempt (the caller saves) and describe it as a Job."""
    exp_path = campaign_dir / entry.exp_path
    out_dir = exp_path.parent
    for stale in (RESULT_FILE, ERROR_FILE):
        (out_dir / stale).unlink(missing_ok=True)
    entry.attempts += 1
    spec = _read_spec(campaign_dir, entry)
    # output_dir follows the campaign directory: it may have moved since exp.json was written.
    current = {
        "attempt": entry.attempts,
        "output_dir": str(out_dir.resolve()),
        "cache_dir": str(campaign_dir.resolve() / CACHE_DIR),
    }
    if any(getattr(spec, key) != value for key, value in current.items()):
        spec = spec.model_copy(update=current)
        write_text_atomic(exp_path, spec.model_dump_json(indent=2))
    entry.status, entry.runner = "running", runner_name
    entry.started_at, entry.finished_at, entry.error = utcnow(), None, None
    entry.container_name = entry.container_id = entry.image_digest = None
    return Job(
        exp_path=exp_path,
        output_dir=out_dir,
        log_path=out_dir / LOG_FILE,
        env={
            "LEM_CAMPAIGN_ID": manifest.campaign_id,
            "LEM_CYCLE": str(entry.cycle),
            "LEM_TOTAL_CYCLES": str(manifest.total_cycles),
            "LEM_EXPERIMENT_ID": entry.experiment_id,
        },
        timeout_s=timeout_s or manifest.timeout_s,
    )


def _complete_entry(
    entry: ManifestEntry, job: Job, outcome: Outcome, store: ManifestStore, manifest: Manifest
) -> None:
    result = _read_result(job.output_dir / RESULT_FILE)
    if outcome.container is not None:
        entry.container_name = outcome.container.name
        entry.container_id = outcome.container.id
        entry.image_digest = outcome.container.image_digest
    entry.finished_at = utcnow()
    if result is not None and outcome.returncode == 0:
        entry.status = "done"
        entry.result_path = str(Path(entry.exp_path).parent / RESULT_FILE)
    else:
        entry.status = "failed"
        entry.error = _failure_cause(job.output_dir, outcome, job.timeout_s)
    store.save(manifest)


def _recover(campaign_dir: Path, entry: ManifestEntry) -> bool:
    """An entry not marked done whose result.json is complete finished before a crash."""
    result_path = Path(entry.exp_path).parent / RESULT_FILE
    result = _read_result(campaign_dir / result_path)
    if result is None or (result.experiment_id, result.cycle) != (entry.experiment_id, entry.cycle):
        return False
    entry.status, entry.result_path, entry.error = "done", str(result_path), None
    entry.finished_at = entry.finished_at or utcnow()
    return True


def _read_result(path: Path) -> ExperimentResult | None:
    try:
        return ExperimentResult.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def _failure_cause(out_dir: Path, outcome: Outcome, timeout_s: float) -> str:
    if outcome.timed_out:
        return f"timed out after {timeout_s:g} s; worker killed. {_log_tail(out_dir)}"
    try:
        record = ErrorRecord.model_validate_json((out_dir / ERROR_FILE).read_bytes())
        return f"{record.error_type}: {record.message}"
    except (OSError, ValidationError):
        pass
    how = _describe_exit(outcome.returncode)
    return f"worker {how} without writing a result. {_log_tail(out_dir)}"


def _describe_exit(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _log_tail(out_dir: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = (out_dir / LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no worker log)"
    tail = text.strip().splitlines()[-lines:]
    return "Log tail: " + " | ".join(tail) if tail else "(worker log is empty)"
