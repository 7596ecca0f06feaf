"""Attempts a batch scheduler still holds when a campaign is resumed: the runs an orchestrator
submitted to Slurm before it was killed (or detached with `lem campaign --detach`). Their job
ids are in the manifest from submission on (or found by job name, if the orchestrator died
between sbatch and that record). A resume waits for each such job instead of submitting the
run again, then records how it ended like any attempt: collated when its result is complete,
failed with the worker's reason, or lost (cancelled, node failure, preemption, time limit)
with Slurm's state and run again within `retries`. Nothing runs twice."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass
from pathlib import Path

from llenergymeasure.errors import ConfigError
from llenergymeasure.orchestrator.dispatch import StopRequest, WaitEvents
from llenergymeasure.orchestrator.entries import entry_job
from llenergymeasure.orchestrator.manifest import Manifest, ManifestEntry
from llenergymeasure.orchestrator.runners import Job, Outcome, Runner

SLURM_LIVE = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESIZING",
    "SUSPENDED",
    "STOPPED",
    "SIGNALING",
    "STAGE_OUT",
}
"""squeue states of a job that has not ended: it is waited for, never submitted again."""


@dataclass(frozen=True)
class Adopted:
    entry: ManifestEntry
    job: Job
    job_id: str


def held_by_slurm(campaign_dir: Path, manifest: Manifest) -> list[Adopted]:
    """The entries still `running` under runner slurm whose job is known: its recorded id, or
    the job squeue lists under the attempt's name. Call after recovering complete results."""
    from llenergymeasure.orchestrator.runners.slurm import find_job, job_name

    held = []
    unknown = []
    for entry in manifest.entries:
        if entry.status != "running" or entry.runner != "slurm":
            continue
        job = entry_job(campaign_dir, manifest, entry, None)
        job_id = entry.slurm_job_id or find_job(job_name(job))
        if job_id is not None:
            entry.slurm_job_id = job_id
            held.append(Adopted(entry, job, job_id))
        else:
            unknown.append(entry.key)
    if unknown:
        _refuse_unrecorded_arrays(manifest, {a.job_id for a in held}, unknown)
    return held


def _refuse_unrecorded_arrays(manifest: Manifest, known: set[str], unknown: list[str]) -> None:
    """A detached submission killed between sbatch and recording the task ids leaves runs
    `running` with no id while their array's tasks (named lem-<campaign id>) may still run:
    running them again now could run them twice, so the resume waits for the user."""
    from llenergymeasure.orchestrator.runners.slurm import _lines

    name = f"lem-{manifest.campaign_id}"
    rows = _lines(["squeue", "-h", "-r", "-n", name, "-o", "%i %T"])
    live = [r.split()[0] for r in rows if r.split()[-1] in SLURM_LIVE]
    stray = sorted(set(live) - known)
    if stray:
        raise ConfigError(
            f"Slurm runs jobs of this campaign that its manifest does not name "
            f"({', '.join(stray[:5])}{', ...' if len(stray) > 5 else ''}) while "
            f"{len(unknown)} run(s) have no job id (e.g. {unknown[0]}): their submission was "
            "cut short. Wait until they end (squeue), or scancel them, then resume: a "
            "complete result is kept, the rest runs again"
        )


def refuse_other_runner(held: list[Adopted], runner: Runner) -> None:
    """A resume with another runner would run again what Slurm still runs: refused while any
    of those jobs is queued or running."""
    from llenergymeasure.orchestrator.runners.slurm import _squeue_state

    live = [a for a in held if _squeue_state(a.job_id) in SLURM_LIVE]
    if live:
        ids = ", ".join(a.job_id for a in live)
        raise ConfigError(
            f"runner {runner.name}: Slurm still runs jobs of this campaign ({ids}); resume "
            "with --runner slurm to wait for them, or scancel them first"
        )


def wait_adopted(
    held: list[Adopted],
    runner: Runner,
    executor: Executor,
    complete: Callable[[ManifestEntry, Job, Outcome], bool],
    events: WaitEvents,
    stop: StopRequest,
    stop_grace_s: float,
    tick_s: float = 1.0,
) -> list[ManifestEntry]:
    """Wait for every held job (on the executor's threads) and record how each ended;
    returns the entries that may run again (a lost or failed attempt within `retries`). A stop
    request cancels them like any running job of an attached campaign."""
    adopt = getattr(runner, "adopt")  # noqa: B009 (only batch runners have it)
    running: dict[Future[Outcome], Adopted] = {}
    for held_job in held:
        events.notice(
            f"{held_job.entry.key}: waiting for Slurm job {held_job.job_id}, submitted "
            "before this resume (not submitted again)"
        )
        running[executor.submit(adopt, held_job.job, held_job.job_id)] = held_job
    again: list[ManifestEntry] = []
    interrupted = False
    while running:
        if stop.reason is not None and not interrupted:
            interrupted = True
            runner.interrupt(stop_grace_s)
        done, _ = wait(running, timeout=tick_s, return_when=FIRST_COMPLETED)
        for future in done:
            finished = running.pop(future)
            if complete(finished.entry, finished.job, future.result()):
                again.append(finished.entry)
    return again


def held_keys(held: list[Adopted]) -> set[str]:
    return {a.entry.key for a in held}
