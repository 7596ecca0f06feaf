"""`lem campaign --detach` (a batch runner): lay the campaign out, submit every run to the
scheduler and return; nothing of lem runs while the jobs do. `lem status` shows them, `lem
resume` waits for those still queued or running (never submitting them again), collates the
ended ones and runs again, within `retries`, those lost or failed.

The rule for order and gaps, kept by the scheduler itself: the runs go in manifest order as
job arrays, one array per stretch that may overlap. Under `order: interleaved` or `shuffled` a
cycle starts only once the previous one has ended (each cycle's array depends `afterany` on
the one before: the dispatcher's barrier); under `grouped` the whole campaign is one array.
How many tasks of an array run at once, and whether one holds a whole node, are the runner's
settings (on one node with exclusive tasks the runs are sequential, in index order). Each task
sleeps its gap (between experiments or cycles) on its node before its run: on one node that
is the campaign's gap; across nodes a task may wait a gap its node did not need, never less."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llenergymeasure.config.campaign import DEFAULT_CYCLES
from llenergymeasure.config.grid import Campaign
from llenergymeasure.config.settings import UserSettings
from llenergymeasure.errors import ConfigError
from llenergymeasure.faults import crashpoint
from llenergymeasure.orchestrator.entries import prepare_entry
from llenergymeasure.orchestrator.experiments import ExperimentSpecs
from llenergymeasure.orchestrator.layout import create_campaign
from llenergymeasure.orchestrator.lock import CampaignLock
from llenergymeasure.orchestrator.manifest import ManifestEntry, ManifestStore
from llenergymeasure.orchestrator.runners import AdoptingRunner, Job
from llenergymeasure.orchestrator.runners.select import QUEUES, RunnerPlan, job_queue
from llenergymeasure.orchestrator.schedule import gap_between, needs_barrier

ArrayBody = Callable[[Job, float, Any], Any]


@dataclass(frozen=True)
class Detached:
    campaign_dir: Path
    job_ids: list[str]
    arrays: int
    scheduler: str


def detach(
    campaign: Campaign,
    settings: UserSettings,
    runner_plan: RunnerPlan,
    body: ArrayBody | None = None,
) -> Detached:
    """Create the campaign and submit all its runs; the manifest records every job id.
    body: the array tasks' function (see the runner's submit_array)."""
    queue = job_queue(runner_plan.name)
    if queue is None:
        raise ConfigError(
            f"--detach needs a batch runner ({', '.join(QUEUES)}; this campaign's runner is "
            f"{runner_plan.name}): only a batch scheduler runs a campaign without lem"
        )
    directory = create_campaign(
        campaign,
        Path(settings.results_dir),
        default_cycles=DEFAULT_CYCLES,
        settings=settings,
        runner_name=runner_plan.name,
    )
    with CampaignLock(directory, notice=lambda _m: None):
        store = ManifestStore(directory)
        manifest = store.load()
        specs = ExperimentSpecs(directory)
        execution = manifest.execution
        entries = manifest.pending()
        jobs = [prepare_entry(specs, manifest, e, runner_plan.name, None) for e in entries]
        store.save(manifest)  # running before submission: a resume looks each up by job name
        runner = runner_plan.open(directory)
        assert isinstance(runner, AdoptingRunner)
        ids: list[str] = []
        arrays = 0
        after: list[str] = []
        limit = runner.max_array_size()
        for stretch in _stretches(entries, execution.order):
            stretch_arrays = []
            # a stretch past the scheduler's array size: arrays side by side
            for chunk in _chunks(stretch, limit):
                gaps = [
                    gap_between(
                        entries[i - 1] if i else None, entries[i], execution.order, execution.gaps
                    ).seconds
                    for i in chunk
                ]
                chunk_jobs: list[Job] = [jobs[i] for i in chunk]
                chunk_ids = runner.submit_array(chunk_jobs, gaps, ":".join(after) or None, body)
                crashpoint("detach.after_submit")  # submitted, ids not yet recorded
                stretch_arrays.append(chunk_ids[0].split("_")[0])
                for i, job_id in zip(chunk, chunk_ids, strict=True):
                    entries[i].job_id = job_id
                ids.extend(chunk_ids)
            after = stretch_arrays  # the next stretch starts once all of these have ended
            arrays += len(stretch_arrays)
        store.save(manifest)
    return Detached(directory, ids, arrays, queue.scheduler)


def _stretches(entries: list[ManifestEntry], order: str) -> list[list[int]]:
    """Indices of the runs that may share one array: cut where the dispatcher would wait
    for everything before (a new cycle under interleaved/shuffled)."""
    stretches: list[list[int]] = []
    for i, entry in enumerate(entries):
        if not stretches or needs_barrier(entries[i - 1], entry, order):  # type: ignore[arg-type]
            stretches.append([])
        stretches[-1].append(i)
    return stretches


def _chunks(indices: list[int], size: int) -> list[list[int]]:
    """indices cut into runs of at most size (the scheduler's most tasks per array)."""
    return [indices[k : k + size] for k in range(0, len(indices), size)]
