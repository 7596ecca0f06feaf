"""`lem status`: where each run of a campaign stands, read from the manifest and, for runs
held by Slurm, from Slurm's own state (squeue) and the files they wrote. Read-only: a resume
(`lem resume`) is what records the reconciliation, under the campaign's lock."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from llenergymeasure.orchestrator.adopt import SLURM_LIVE
from llenergymeasure.orchestrator.entries import complete_result, entry_job
from llenergymeasure.orchestrator.manifest import ManifestStore


@dataclass(frozen=True)
class RunState:
    key: str
    status: str
    """The manifest's status, or for a run held by Slurm what Slurm and its files say."""
    slurm_job_id: str | None
    detail: str


def campaign_status(campaign_dir: Path) -> list[RunState]:
    from llenergymeasure.orchestrator.runners.slurm import _squeue_state, find_job, job_name

    manifest = ManifestStore(campaign_dir).load()
    rows = []
    for entry in manifest.entries:
        job_id = entry.slurm_job_id
        if entry.status != "running":
            rows.append(RunState(entry.key, entry.status, job_id, entry.error or ""))
            continue
        out_dir = (campaign_dir / entry.exp_path).parent
        if complete_result(out_dir, manifest, entry) is not None:
            rows.append(
                RunState(entry.key, "finished", job_id, "result complete; collated by lem resume")
            )
            continue
        if entry.runner == "slurm" and job_id is None:
            job_id = find_job(job_name(entry_job(campaign_dir, manifest, entry, None)))
        if entry.runner != "slurm" or job_id is None:
            rows.append(RunState(entry.key, "running", job_id, f"runner {entry.runner}"))
            continue
        state = _squeue_state(job_id)
        if state in SLURM_LIVE:
            rows.append(RunState(entry.key, state.lower(), job_id, f"Slurm: {state}"))
        else:
            why = f"Slurm: {state}" if state else "gone from Slurm's queue"
            rows.append(
                RunState(entry.key, "lost", job_id, f"{why}, no result; lem resume runs it again")
            )
    return rows


def counts(rows: list[RunState]) -> dict[str, int]:
    return dict(Counter(r.status for r in rows))
