"""`lem status`: where each run of a campaign stands, read from the manifest and, for runs
held by a batch scheduler, from the scheduler's own state and the files they wrote.
Read-only: a resume (`lem resume`) is what records the reconciliation, under the campaign's
lock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llenergymeasure.orchestrator.entries import complete_result, entry_job
from llenergymeasure.orchestrator.manifest import ManifestStore
from llenergymeasure.orchestrator.runners.select import job_queue


@dataclass(frozen=True)
class RunState:
    key: str
    status: str
    """The manifest's status, or for a run held by a scheduler what it and its files say."""
    job_id: str | None
    detail: str


def campaign_status(campaign_dir: Path) -> list[RunState]:
    manifest = ManifestStore(campaign_dir).load()
    rows = []
    for entry in manifest.entries:
        job_id = entry.job_id
        if entry.status != "running":
            rows.append(RunState(entry.key, entry.status, job_id, entry.error or ""))
            continue
        out_dir = (campaign_dir / entry.exp_path).parent
        if complete_result(out_dir, manifest, entry) is not None:
            rows.append(
                RunState(entry.key, "finished", job_id, "result complete; collated by lem resume")
            )
            continue
        queue = job_queue(entry.runner)
        if queue is not None and job_id is None:
            job_id = queue.find(entry_job(campaign_dir, manifest, entry, None))
        if queue is None or job_id is None:
            rows.append(RunState(entry.key, "running", job_id, f"runner {entry.runner}"))
            continue
        state = queue.state(job_id)
        if state is not None and queue.live(state):
            rows.append(RunState(entry.key, state.lower(), job_id, f"{queue.scheduler}: {state}"))
        else:
            why = f"{queue.scheduler}: {state}" if state else f"gone from {queue.scheduler}'s queue"
            rows.append(
                RunState(entry.key, "lost", job_id, f"{why}, no result; lem resume runs it again")
            )
    return rows
