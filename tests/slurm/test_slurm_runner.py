"""Campaigns through a real Slurm: every run done exactly once, lost jobs re-submitted within
`retries` with their job ids recorded, bad settings stopped before anything is submitted."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from lem_cli import (
    SEEDS_1_2,
    explain,
    lem_cmd,
    lem_env,
    load_manifest,
    only_campaign_dir,
    run_lem,
    tiny_base,
    tiny_campaign,
    write,
)
from slurm_helpers import queued_jobs

from llenergymeasure.results.schema import ExperimentResult, schema_fingerprint

SLURM = {"LEM_RUNNER": "slurm"}
REPO = Path(__file__).resolve().parents[2]


def running_job(root: Path, other_than: str = "", timeout_s: float = 240) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-t", "RUNNING", "-o", "%i %o"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        ids = [
            line.split()[0]
            for line in out.splitlines()
            if str(root) in line and line.split()[0] != other_than
        ]
        if ids:
            return ids[0]
        time.sleep(0.5)
    raise AssertionError("no job of this campaign reached RUNNING")


def start_slurm_campaign(campaign: Path, cwd: Path) -> subprocess.Popen[str]:
    """`lem campaign FILE --runner slurm` in the background, its output captured."""
    return subprocess.Popen(
        lem_cmd("campaign", campaign, "--runner", "slurm"),
        cwd=cwd,
        env=lem_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_scancel_resubmits_requeue_waits_every_run_done_once(campaign_root: Path) -> None:
    campaign = write(campaign_root / "c.yaml", tiny_campaign("sl", tail=SEEDS_1_2 + "retries: 1\n"))
    proc = start_slurm_campaign(campaign, campaign_root)
    try:
        cancelled = running_job(campaign_root)
        subprocess.run(["scancel", cancelled], check=True, timeout=30)
        requeued = running_job(campaign_root, other_than=cancelled)
        subprocess.run(["scontrol", "requeue", requeued], check=True, timeout=30)
        out, _ = proc.communicate(timeout=280)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    manifest = load_manifest(only_campaign_dir(campaign_root / "results"))
    entries = manifest.entries
    assert [e.status for e in entries] == ["done", "done"], out
    job_ids = [e.job_id for e in entries]
    assert None not in job_ids and cancelled not in job_ids and len(set(job_ids)) == 2
    assert requeued in job_ids  # Slurm ran it again under the same id; lem waited for it
    assert sorted(e.attempts for e in entries) == [1, 2]  # only the cancelled run ran again
    assert {e.job_node for e in entries} == {
        subprocess.check_output(["hostname", "-s"], text=True).strip()
    }
    assert queued_jobs(campaign_root) == []


def test_unknown_partition_fails_before_submission(campaign_root: Path) -> None:
    campaign = write(campaign_root / "c.yaml", tiny_campaign("bad"))
    proc = run_lem(
        "campaign",
        campaign,
        cwd=campaign_root,
        env=SLURM | {"LEM_SLURM_PARTITION": "no-such-partition"},
    )
    assert proc.returncode == 2, explain(proc)
    assert "unknown partition 'no-such-partition'" in proc.stderr + proc.stdout, explain(proc)
    assert not (campaign_root / "results").exists() or not any(
        (campaign_root / "results").iterdir()
    )
    assert queued_jobs(campaign_root) == []


def test_ctrl_c_cancels_its_jobs(campaign_root: Path) -> None:
    campaign = write(campaign_root / "c.yaml", tiny_campaign("cc", tail=SEEDS_1_2))
    proc = start_slurm_campaign(campaign, campaign_root)
    try:
        running = running_job(campaign_root)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    assert queued_jobs(campaign_root) == [], out  # scancel'd: nothing left queued or running
    entries = load_manifest(only_campaign_dir(campaign_root / "results")).entries
    assert "done" not in {e.status for e in entries}, out
    assert running in {e.job_id for e in entries}, out


def job_folders(campaign_dir: Path) -> set[str]:
    """The jobs (or array tasks) ever submitted for the campaign: submitit pickles each
    one's call in its own folder (an array's shared submission script has a folder too)."""
    return {p.parent.name for p in (campaign_dir / "slurm").glob("*/*_submitted.pkl")}


def test_sigkilled_orchestrator_resumes_without_running_twice(campaign_root: Path) -> None:
    campaign = write(campaign_root / "c.yaml", tiny_campaign("kill", tail=SEEDS_1_2))
    proc = start_slurm_campaign(campaign, campaign_root)
    try:
        first = running_job(campaign_root)
        proc.kill()  # SIGKILL: no handler runs, the job keeps running in Slurm
        proc.wait(timeout=30)
    finally:
        proc.kill()
    campaign_dir = only_campaign_dir(campaign_root / "results")
    entry = load_manifest(campaign_dir).entries[0]
    assert (entry.status, entry.job_id) == ("running", first)  # recorded at submission
    resumed = run_lem("resume", campaign_dir, cwd=campaign_root)
    assert resumed.returncode == 0, explain(resumed)
    assert f"waiting for Slurm job {first}" in resumed.stderr, explain(resumed)
    entries = load_manifest(campaign_dir).entries
    assert [(e.status, e.attempts) for e in entries] == [("done", 1), ("done", 1)]
    ids = [e.job_id for e in entries]
    assert ids[0] == first and ids[1] not in (None, first)
    assert job_folders(campaign_dir) == set(ids)  # no run was submitted twice
    assert [a.job_id for e in entries for a in e.attempt_history] == ids
    assert queued_jobs(campaign_root) == []


def test_detached_campaign_status_and_resume_records_a_failed_run(campaign_root: Path) -> None:
    # The first experiment fails in the worker (no CUDA device on this host), the second runs.
    campaign = write(
        campaign_root / "c.yaml",
        "name: det\ncycles: 1\n"
        + tiny_base()
        + "experiments:\n  - {pytorch: {device: cuda}}\n  - {batch_size: 2}\n",
    )
    detached = run_lem("campaign", campaign, "--detach", cwd=campaign_root, env=SLURM)
    assert detached.returncode == 0, explain(detached)
    assert "Submitted 2 runs in 1 Slurm job array(s)" in detached.stderr, explain(detached)
    campaign_dir = only_campaign_dir(campaign_root / "results")
    entries = load_manifest(campaign_dir).entries
    ids = [e.job_id for e in entries]
    assert [e.status for e in entries] == ["running", "running"]
    assert ids[0] is not None and ids[1] == ids[0].replace("_0", "_1")  # one array, 2 tasks
    shown = run_lem("status", campaign_dir, cwd=campaign_root)
    assert shown.returncode == 0, explain(shown)
    assert all(f"job {i}" in shown.stdout for i in ids if i), explain(shown)
    resumed = run_lem("resume", campaign_dir, cwd=campaign_root)
    assert resumed.returncode == 1, explain(resumed)  # one run failed
    bad, good = load_manifest(campaign_dir).entries
    assert (bad.status, bad.attempts, bad.job_id) == ("failed", 1, ids[0])
    assert bad.error == "BackendError: pytorch.device is 'cuda' but torch sees no CUDA device"
    assert (good.status, good.attempts, good.job_id) == ("done", 1, ids[1])
    assert job_folders(campaign_dir) == set(ids)
    after = run_lem("status", campaign_dir, cwd=campaign_root)
    assert "1 done, 1 failed" in after.stdout, explain(after)
    assert queued_jobs(campaign_root) == []


def test_node_runner_docker_runs_the_worker_in_a_container(campaign_root: Path) -> None:
    tag = f"cpu-test-{schema_fingerprint()}"
    image = f"llenergymeasure-pytorch:{tag}"
    try:
        found = subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True, check=False
        )
    except OSError as e:
        pytest.skip(f"no docker client ({e}); scripts/provision-docker.sh sets one up")
    if found.returncode != 0:
        pytest.skip(f"no image {image} (tests/docker builds it; no engine: provision-docker.sh)")
    campaign = write(
        campaign_root / "c.yaml", tiny_campaign("dk", tail="slurm: {node_runner: docker}\n")
    )
    env = SLURM | {"LEM_IMAGE_TAG": tag, "LEM_COMPOSE_FILE": str(REPO / "compose.yaml")}
    proc = run_lem("campaign", campaign, cwd=campaign_root, env=env)
    assert proc.returncode == 0, explain(proc)
    manifest = load_manifest(only_campaign_dir(campaign_root / "results"))
    (entry,) = manifest.entries
    assert entry.status == "done" and entry.job_id is not None
    campaign_dir = only_campaign_dir(campaign_root / "results")
    result = ExperimentResult.model_validate_json(
        (campaign_dir / str(entry.result_path)).read_bytes()
    )
    assert result.environment.in_container  # the worker ran in the image, on the node
    record = manifest.execution.settings
    assert record is not None and record.slurm is not None
    assert record.slurm.node_runner == "docker"
    assert record.sources["slurm.node_runner"] == "campaign file"
    assert queued_jobs(campaign_root) == []


def test_detach_cut_short_before_recording_ids_runs_nothing_twice(campaign_root: Path) -> None:
    campaign = write(campaign_root / "c.yaml", tiny_campaign("cut", tail=SEEDS_1_2))
    cut = run_lem(
        "campaign",
        campaign,
        "--detach",
        cwd=campaign_root,
        env=SLURM | {"LEM_CRASHPOINT": "detach.after_submit:1"},
    )
    assert cut.returncode == -signal.SIGKILL, explain(cut)
    campaign_dir = only_campaign_dir(campaign_root / "results")
    entries = load_manifest(campaign_dir).entries
    assert [(e.status, e.job_id) for e in entries] == [("running", None)] * 2
    early = run_lem("resume", campaign_dir, cwd=campaign_root)
    assert early.returncode == 2, explain(early)  # its tasks still run: not submitted again
    assert "submission was cut short" in early.stderr, explain(early)
    deadline = time.monotonic() + 180
    while queued_jobs(campaign_root) and time.monotonic() < deadline:
        time.sleep(1)
    resumed = run_lem("resume", campaign_dir, cwd=campaign_root)
    assert resumed.returncode == 0, explain(resumed)
    entries = load_manifest(campaign_dir).entries
    assert [(e.status, e.attempts) for e in entries] == [("done", 1), ("done", 1)]
    assert len(job_folders(campaign_dir)) == 2  # the array's two tasks, nothing more
