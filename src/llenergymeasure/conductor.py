"""The conductor: one path from (a campaign file or a campaign directory, overrides) to a run.

Both faces call it, and reach the host through nothing else: the CLI (`lem campaign`, `lem
run`, `lem resume`, `lem status`, `lem repair`) prints its events and summary; the library API
(`run_campaign`, `run_experiment`, `resume`, `load_results`) returns objects. It
resolves every effective setting once, each with its source (flag > campaign file >
environment > `.lem-config.yaml` > default), expands the grid, runs pre-flight (prompts,
runner, images) before anything is written, and records what it resolved in the manifest's
`execution`. Resuming reads that record back: only overrides given to the resume change a
value, and they are recorded as such.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llenergymeasure.config.campaign import DEFAULT_CYCLES, Execution
from llenergymeasure.config.choices import Order, RunnerChoice
from llenergymeasure.config.grid import HARD_MAX_EXPERIMENTS, Campaign, PlannedExperiment
from llenergymeasure.config.settings import (
    UserSettings,
    load_settings,
    resolve_settings,
)
from llenergymeasure.errors import ConfigError, LemError
from llenergymeasure.faces import cli_flag
from llenergymeasure.orchestrator.broadcast import Broadcast
from llenergymeasure.orchestrator.campaign import Events, RunSummary, run_campaign_dir
from llenergymeasure.orchestrator.detach import ArrayBody, Detached
from llenergymeasure.orchestrator.detach import detach as submit_all
from llenergymeasure.orchestrator.entries import check_entry_folder
from llenergymeasure.orchestrator.gpu_locks import (
    DeviceBusyError,
    DeviceLocks,
    host_devices,
)
from llenergymeasure.orchestrator.layout import create_campaign
from llenergymeasure.orchestrator.manifest import (
    Manifest,
    ManifestEntry,
    ManifestStore,
    result_missing,
    to_resume,
)
from llenergymeasure.orchestrator.names import EXPERIMENTS_FILE, LOCK_FILE, MANIFEST_FILE
from llenergymeasure.orchestrator.runners.select import RunnerPlan, Workload, plan_runner
from llenergymeasure.orchestrator.schedule import parse_gpus, resolve_execution, run_order

if TYPE_CHECKING:
    from llenergymeasure.orchestrator.repair import RepairReport
    from llenergymeasure.orchestrator.status import RunState

__all__ = ["DEFAULT_CYCLES", "Events", "Manifest", "ManifestEntry", "RunSummary", "parse_gpus"]
"""What the faces name from the host, through here."""

Face = Literal["cli", "api"]


@dataclass(frozen=True)
class Overrides:
    """What a face was told beyond the file: each None (or False) when not given."""

    face: Face = "cli"
    resuming: bool = False
    output_dir: Path | None = None
    cycles: int | None = None
    order: Order | None = None
    runner: RunnerChoice | None = None
    timeout_s: float | None = None
    retries: int | None = None
    gpus: tuple[int, ...] | None = None
    retry_failed: bool = False
    force_unlock: bool = False
    allow_large: bool = False
    """Past the user settings' max_experiments (the CLI's --yes)."""
    wait_for_gpus: bool = True
    """A device held by another campaign: wait for it (else refuse; see gpu_locks.py)."""

    def source(self, key: str) -> str:
        """How the record names a value set here: `--runner`, `lem resume --runner`,
        `argument runner` (library)."""
        name = f"argument {key}" if self.face == "api" else cli_flag(key)
        return f"lem resume {name}" if self.resuming and self.face == "cli" else name

    def campaign_keys(self) -> dict[str, Any]:
        """The overrides that replace campaign-file keys, validated like the file's own."""
        given = {"cycles": self.cycles, "order": self.order}
        return {k: v for k, v in given.items() if v is not None}

    def limits(self) -> dict[str, Any]:
        """The per-run limits given: recorded in the manifest of a new campaign, applied to
        this call only when resuming."""
        given = {"timeout_s": self.timeout_s, "retries": self.retries}
        return {k: v for k, v in given.items() if v is not None}


@dataclass(frozen=True)
class Plan:
    """A campaign ready to run: everything resolved and checked, nothing written yet (for a new
    campaign) or nothing changed yet (for a resume)."""

    settings: UserSettings
    runner: RunnerPlan
    overrides: Overrides
    campaign: Campaign | None = None
    """A new campaign to lay out; None when resuming campaign_dir."""
    campaign_dir: Path | None = None
    manifest: Manifest | None = None
    notices: list[str] = field(default_factory=list)

    @property
    def resuming(self) -> bool:
        return self.campaign is None

    @property
    def cycles(self) -> int:
        if self.manifest is not None:
            return self.manifest.total_cycles
        assert self.campaign is not None
        return self.campaign.config.cycles or DEFAULT_CYCLES


def load_limit(settings: UserSettings, overrides: Overrides) -> int:
    """How many experiments a campaign may expand to before it is refused."""
    return HARD_MAX_EXPERIMENTS if overrides.allow_large else settings.max_experiments


def plan_campaign(load: Callable[[dict[str, Any], int], Campaign], overrides: Overrides) -> Plan:
    """Plan a new campaign. load(campaign_keys, max_experiments) reads and expands it (a file
    or data: the faces say which), with the overrides that replace its top-level keys."""
    user = load_settings()
    campaign = load(overrides.campaign_keys(), load_limit(user, overrides))
    if overrides.limits():
        config = campaign.config.model_copy(update=overrides.limits())
        campaign = replace(campaign, config=config)
    settings = resolve_settings(
        user,
        campaign.config,
        flags={
            "results_dir": (overrides.output_dir, overrides.source("output_dir")),
            "runner": (overrides.runner, overrides.source("runner")),
            "gpus": (overrides.gpus, overrides.source("gpus")),
        },
        campaign_flags={
            k: overrides.source(k) for k in (*overrides.campaign_keys(), *overrides.limits())
        },
    )
    root = Path(settings.results_dir)
    runner = plan_runner(Workload.of_campaign(campaign, root), settings)
    return Plan(
        settings=settings,
        runner=runner,
        overrides=overrides,
        campaign=campaign,
        notices=[*campaign.notices, *runner.notices],
    )


def campaign_to_resume(
    results_dir: Path, retry_failed: bool, notice: Callable[[str], None]
) -> Path | None:
    """The newest campaign under results_dir with something to run (None: there is none).
    Every campaign whose manifest cannot be read is named with its `lem repair` hint: through
    notice beside a readable candidate, else as the error (exit 2), since such a campaign may
    be the unfinished one and "nothing to resume" would be a guess."""
    candidates, damaged = [], []
    found = {
        p.parent
        for name in (MANIFEST_FILE, EXPERIMENTS_FILE)
        for p in results_dir.glob(f"*/{name}")
    }
    for directory in sorted(found):
        try:
            manifest = ManifestStore(directory).load()
        except LemError as e:
            damaged.append(str(e))
            continue
        if to_resume(directory, manifest, retry_failed):
            candidates.append((manifest.created_at, directory))
    if candidates:
        for problem in damaged:
            notice(f"not resumable as it is: {problem}")
        return max(candidates)[1]
    if damaged:
        raise ConfigError(
            f"no readable unfinished campaign under {results_dir}/, and {len(damaged)} could "
            "not be read:\n  " + "\n  ".join(damaged)
        )
    return None


def plan_resume(campaign_dir: Path, overrides: Overrides) -> Plan:
    """Plan the rest of an existing campaign with the settings it recorded; overrides given
    now replace them (and are recorded with their source)."""
    overrides = replace(overrides, resuming=True)
    manifest = ManifestStore(campaign_dir).load()
    recorded = manifest.execution.settings
    current = load_settings()  # secrets (webhook URLs) are never recorded: read them anew
    settings = current.restored(recorded) if recorded is not None else current
    settings = settings.override(overrides.source("runner"), runner=overrides.runner)
    settings = settings.override(overrides.source("gpus"), gpus=overrides.gpus)
    workload = Workload.of_campaign_dir(campaign_dir, overrides.retry_failed)
    runner = plan_runner(workload, settings)
    return Plan(
        settings=settings,
        runner=runner,
        overrides=overrides,
        campaign_dir=campaign_dir,
        manifest=manifest,
        notices=list(runner.notices),
    )


def execute(
    plan: Plan,
    events: Events | None = None,
    on_problem: Callable[[str], None] | None = None,
    on_created: Callable[[Path], None] | None = None,
) -> RunSummary:
    """Run a plan to its end (or its interruption): lay out the campaign directory for a new
    campaign, record the resolved settings, then run every pending entry."""
    settings = plan.settings
    if plan.campaign is not None:
        directory = create_campaign(
            plan.campaign,
            Path(settings.results_dir),
            default_cycles=DEFAULT_CYCLES,
            settings=settings,
            runner_name=plan.runner.name,
        )
    else:
        if plan.campaign_dir is None:
            raise ConfigError("a plan needs a campaign or a campaign directory")
        directory = plan.campaign_dir
    if on_created is not None:
        on_created(directory)
    try:
        return _run(plan, directory, events, on_problem)
    except DeviceBusyError as e:
        if plan.campaign is None:
            raise
        # Refused before anything ran: a new campaign's folder would only be an empty one
        # for `lem resume` to trip over.
        shutil.rmtree(directory, ignore_errors=True)
        raise DeviceBusyError(
            f"{e.args[0]} (nothing ran; {directory} was removed)", options=e.options
        ) from None


def planned_runs(plan: Plan) -> tuple[Execution, list[tuple[PlannedExperiment, int]]]:
    """A new campaign's execution settings and its runs in order (experiment, cycle): what a
    dry run shows."""
    assert plan.campaign is not None
    execution = resolve_execution(plan.campaign.config, plan.settings)
    experiments = plan.campaign.experiments
    pairs = run_order(len(experiments), plan.cycles, execution.order, execution.order_seed)
    return execution, [(experiments[i], cycle) for i, cycle in pairs]


def load_manifest(campaign_dir: Path) -> Manifest:
    return ManifestStore(campaign_dir).load()


def experiment_order(campaign_dir: Path) -> list[str]:
    """Experiment ids in the campaign file's grid order (experiments.json keeps it)."""
    from llenergymeasure.orchestrator.experiments import ExperimentSpecs

    return ExperimentSpecs(campaign_dir).experiment_ids()


@dataclass(frozen=True)
class Resumable:
    """What a resume of a campaign directory would run, read before it is planned."""

    campaign_dir: Path
    manifest: Manifest
    pending: list[ManifestEntry]

    @property
    def unfinished(self) -> bool:
        """Its orchestrator died (its lock is left): its end (results.csv, summary.csv, the
        lock itself) is still to be done, even with nothing left to run; so are tables that a
        full disk kept from being written (issue 27.8)."""
        from llenergymeasure.results.aggregate import SUMMARY_STEM
        from llenergymeasure.results.collate import RESULTS_STEM

        tables = [f"{s}.{x}" for s in (RESULTS_STEM, SUMMARY_STEM) for x in ("csv", "parquet")]
        directory = self.campaign_dir
        return (directory / LOCK_FILE).exists() or not all(
            (directory / t).is_file() for t in tables
        )

    def result_missing(self, entry: ManifestEntry) -> bool:
        return result_missing(self.campaign_dir, entry)


def resumable(
    campaign_dir: Path | None,
    results_dir: Path | None,
    retry_failed: bool,
    notice: Callable[[str], None],
) -> tuple[Path, Resumable | None]:
    """The campaign a resume continues: campaign_dir, else campaign_to_resume under
    results_dir (default: the user settings' results_dir), and that root; None when there is
    none."""
    root = (results_dir or Path(load_settings().results_dir)).resolve()
    directory = campaign_dir or campaign_to_resume(root, retry_failed, notice)
    if directory is None:
        return root, None
    directory = directory.resolve()
    manifest = load_manifest(directory)
    pending = to_resume(directory, manifest, retry_failed)
    for entry in pending:
        check_entry_folder(directory, entry)
    return root, Resumable(directory, manifest, pending)


def status(campaign_dir: Path) -> list[RunState]:
    """Where each run stands: the manifest, and a batch scheduler's word for runs it holds."""
    from llenergymeasure.orchestrator.status import campaign_status

    return campaign_status(campaign_dir)


def repair(
    campaign_dir: Path, *, force_unlock: bool = False, notice: Callable[[str], None]
) -> RepairReport:
    """Rebuild a damaged manifest.json from the result files and the journal."""
    from llenergymeasure.orchestrator.repair import repair_campaign

    return repair_campaign(campaign_dir, force_unlock=force_unlock, notice=notice)


def detach(plan: Plan, body: ArrayBody | None = None) -> Detached:
    """Lay out a new campaign and submit every run to its batch runner's scheduler, without
    waiting (`lem campaign --detach`); body: the array tasks' function (benchmarks)."""
    if plan.campaign is None:
        raise ConfigError("only a new campaign is detached; a resume waits for its jobs")
    return submit_all(plan.campaign, plan.settings, plan.runner, body)


def _run(
    plan: Plan, directory: Path, events: Events | None, on_problem: Callable[[str], None] | None
) -> RunSummary:
    """Run the campaign directory's pending entries with the plan's runner, settings and
    device locks; the webhook notifier listens beside `events`."""
    settings, overrides = plan.settings, plan.overrides
    with contextlib.ExitStack() as stack:
        listeners = [events] if events is not None else []
        notifier = None
        if settings.webhooks is not None:  # a listener like any other, on its own thread
            from llenergymeasure.orchestrator.webhooks import WebhookNotifier

            notifier = WebhookNotifier(settings.webhooks, on_problem=on_problem)
            listeners.append(stack.enter_context(notifier))
        summary = run_campaign_dir(
            directory,
            events=Broadcast(*listeners),
            runner=plan.runner.open(directory),
            timeout_s=overrides.timeout_s if plan.resuming else None,
            gpus=settings.gpus_tuple(),
            retries=overrides.retries if plan.resuming else None,
            retry_failed=overrides.retry_failed,
            force_unlock=overrides.force_unlock,
            record=settings.record() if plan.resuming else None,
            devices=_device_locks(plan, directory),
        )
        if notifier is not None:
            notifier.campaign_finished(summary)
    return summary


def _device_locks(
    plan: Plan, directory: Path
) -> Callable[[Events], contextlib.AbstractContextManager[object]] | None:
    """The host-wide locks of the devices the campaign runs on here (none for a runner that
    runs elsewhere)."""
    if plan.runner.remote:
        return None
    devices = host_devices(plan.settings.gpus_tuple())
    return lambda events: DeviceLocks(
        devices, directory.name, wait=plan.overrides.wait_for_gpus, notice=events.notice
    )
