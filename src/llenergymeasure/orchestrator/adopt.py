"""Attempts a batch scheduler still holds when a campaign is resumed: the runs an orchestrator
submitted before it was killed (or detached with `lem campaign --detach`). Their job ids are
in the manifest from submission on (or found by job name, if the orchestrator died between
submitting and that record). A resume waits for each such job instead of submitting the run
again, then records how it ended like any attempt: collated when its result is complete,
failed with the worker's reason, or lost (cancelled, node failure, preemption, time limit)
with the scheduler's state and run again within `retries`. Nothing runs twice."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass
from pathlib import Path

from llenergymeasure.errors import ConfigError, Option
from llenergymeasure.orchestrator.dispatch import StopRequest, WaitEvents
from llenergymeasure.orchestrator.entries import entry_job
from llenergymeasure.orchestrator.manifest import Manifest, ManifestEntry
from llenergymeasure.orchestrator.runners import AdoptingRunner, Job, JobQueue, Outcome, Runner
from llenergymeasure.orchestrator.runners.select import job_queue


@dataclass(frozen=True)
class Adopted:
    entry: ManifestEntry
    job: Job
    job_id: str
    queue: JobQueue


def held_jobs(campaign_dir: Path, manifest: Manifest) -> list[Adopted]:
    """The entries still `running` under a batch runner whose job is known: its recorded id,
    or the job its scheduler lists under the attempt's name. Call after recovering complete
    results."""
    held = []
    unknown: dict[str, list[str]] = {}
    queues: dict[str, JobQueue] = {}
    for entry in manifest.entries:
        queue = job_queue(entry.runner) if entry.status == "running" else None
        if queue is None:
            continue
        queues[entry.runner] = queue
        job = entry_job(campaign_dir, manifest, entry, None)
        job_id = entry.job_id or queue.find(job)
        if job_id is not None:
            entry.job_id = job_id
            held.append(Adopted(entry, job, job_id, queue))
        else:
            unknown.setdefault(entry.runner, []).append(entry.key)
    for runner, keys in unknown.items():
        queues[runner].refuse_strays(manifest.campaign_id, {a.job_id for a in held}, keys)
    return held


def refuse_other_runner(held: list[Adopted], runner: Runner) -> None:
    """A resume with another runner would run again what a scheduler still runs: refused
    while any of those jobs is queued or running."""
    live = [a for a in held if a.queue.live(a.queue.state(a.job_id))]
    if live:
        ids = ", ".join(a.job_id for a in live)
        raise ConfigError(
            f"runner {runner.name}: {live[0].queue.scheduler} still runs jobs of this campaign "
            f"({ids}); resume with {{0}} to wait for them, or {live[0].queue.cancel} them "
            "first",
            options=(Option("runner", live[0].entry.runner),),
        )


def wait_adopted(
    held: list[Adopted],
    runner: AdoptingRunner,
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
    running: dict[Future[Outcome], Adopted] = {}
    for held_job in held:
        events.notice(
            f"{held_job.entry.key}: waiting for {held_job.queue.scheduler} job "
            f"{held_job.job_id}, submitted before this resume (not submitted again)"
        )
        running[executor.submit(runner.adopt, held_job.job, held_job.job_id)] = held_job
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
