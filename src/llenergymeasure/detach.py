"""`lem campaign --detach` (runner slurm): lay the campaign out, submit every run to Slurm
and return; nothing of lem runs while the jobs do. `lem status` shows them, `lem resume`
waits for those still queued or running (never submitting them again), collates the ended
ones and runs again, within `retries`, those lost or failed.

The rule for order and gaps, kept by Slurm itself: the runs go in manifest order as job
arrays (submitit map_array), one array per stretch that may overlap. Under `order:
interleaved` or `shuffled` a cycle starts only once the previous one has ended (each cycle's
array depends `afterany` on the one before: the dispatcher's barrier); under `grouped` the
whole campaign is one array. Within an array at most `slurm.array_parallelism` tasks run at
once, and with `slurm.exclusive` (the default) one task holds a whole node: on one node the
runs are sequential, in index order; with N nodes up to N run side by side, one per node.
Each task sleeps its gap (between experiments or cycles) on its node before its run: on one
node that is the campaign's gap; across nodes a task may wait a gap its node did not need,
never less."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llenergymeasure.conductor import DEFAULT_CYCLES, Plan
from llenergymeasure.errors import ConfigError
from llenergymeasure.faults import crashpoint
from llenergymeasure.orchestrator.entries import prepare_entry
from llenergymeasure.orchestrator.experiments import ExperimentSpecs
from llenergymeasure.orchestrator.layout import create_campaign
from llenergymeasure.orchestrator.lock import CampaignLock
from llenergymeasure.orchestrator.manifest import ManifestEntry, ManifestStore
from llenergymeasure.orchestrator.runners import Job
from llenergymeasure.orchestrator.schedule import gap_between, needs_barrier

ArrayBody = Callable[[Job, float, Any], Any]


@dataclass(frozen=True)
class Detached:
    campaign_dir: Path
    job_ids: list[str]
    arrays: int


def detach(plan: Plan, body: ArrayBody | None = None) -> Detached:
    """Create the campaign and submit all its runs; the manifest records every job id.
    body: the array tasks' function (see SlurmRunner.submit_array)."""
    from llenergymeasure.orchestrator.runners.slurm import SlurmRunner, max_array_size

    if plan.campaign is None or plan.runner.name != "slurm":
        raise ConfigError(
            f"--detach needs runner slurm (this campaign's runner is {plan.runner.name}): "
            "only a batch scheduler runs a campaign without lem; set --runner slurm"
        )
    directory = create_campaign(
        plan.campaign,
        Path(plan.settings.results_dir),
        default_cycles=DEFAULT_CYCLES,
        settings=plan.settings,
        runner_name="slurm",
    )
    with CampaignLock(directory, notice=lambda _m: None):
        store = ManifestStore(directory)
        manifest = store.load()
        specs = ExperimentSpecs(directory)
        execution = manifest.execution
        entries = manifest.pending()
        jobs = [prepare_entry(specs, manifest, e, "slurm", None) for e in entries]
        store.save(manifest)  # running before sbatch: a resume looks each up by job name
        runner = plan.runner.open(directory)
        assert isinstance(runner, SlurmRunner)
        ids: list[str] = []
        arrays = 0
        after: list[str] = []
        limit = max_array_size()
        for stretch in _stretches(entries, execution.order):
            stretch_arrays = []
            for chunk in _chunks(
                stretch, limit
            ):  # a stretch past MaxArraySize: arrays side by side
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
                    entries[i].slurm_job_id = job_id
                ids.extend(chunk_ids)
            after = stretch_arrays  # the next stretch starts once all of these have ended
            arrays += len(stretch_arrays)
        store.save(manifest)
    return Detached(directory, ids, arrays)


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
    """indices cut into runs of at most size (Slurm's MaxArraySize tasks per array)."""
    return [indices[k : k + size] for k in range(0, len(indices), size)]
