"""Ctrl+C, SIGTERM and the grace period, with real orchestrator and worker processes.

First signal: nothing new starts, the running worker is sent SIGTERM, unwinds (its backend
closes) and exits; its entry ends `interrupted`; exit code 130. Second signal: the worker is
killed at once. Either way no worker process is left (also checked for every test by
conftest's _no_worker_left_behind)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from lem_cli import (
    SEEDS_1_2,
    explain,
    lem_cmd,
    lem_env,
    load_manifest,
    only_campaign_dir,
    run_lem,
    tiny_campaign,
    wait_until_no_process_mentions,
    workers_under,
    write,
)

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config.grid import load_campaign
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.orchestrator.runners import NOT_STARTED, Job
from llenergymeasure.orchestrator.runners.local import LocalRunner
from llenergymeasure.results.schema import ErrorRecord, schema_fingerprint

pytestmark = pytest.mark.integration

# The first experiment generates for ~20 s on this CPU (batch 1, 4 x 512 tokens): it is
# surely still in its measured window when the signal comes.
LONG_CAMPAIGN = tiny_campaign(
    "long", n_prompts=4, batch_size=1, max_output_tokens=512, tail=SEEDS_1_2
)
LOADED = b"loaded in"  # the worker's log line once the model is loaded (signal handler set)
WAIT_S = 120.0


def _start(tmp_path: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    campaign_file = write(tmp_path / "long.yaml", LONG_CAMPAIGN)
    log = (tmp_path / "orchestrator.out").open("wb")
    try:
        return subprocess.Popen(
            lem_cmd("campaign", campaign_file, "-o", tmp_path / "out"),
            cwd=tmp_path,
            env=lem_env() | (extra_env or {}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def _wait_for_loaded_worker(orchestrator: subprocess.Popen[bytes], out_root: Path) -> Path:
    """The first experiment's output directory once its worker has loaded the model."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert orchestrator.poll() is None, "the campaign ended before it could be interrupted"
        for log in out_root.glob("*/*/cycle-1/worker.log"):
            if LOADED in log.read_bytes() and workers_under(log.parent):
                return log.parent
        time.sleep(0.05)
    raise AssertionError("the worker never loaded its model")


def _stop(orchestrator: subprocess.Popen[bytes]) -> None:
    if orchestrator.poll() is None:
        orchestrator.kill()
        orchestrator.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_first_signal_lets_the_worker_clean_up_then_stops(
    tmp_path: Path, sig: signal.Signals
) -> None:
    orchestrator = _start(tmp_path)
    try:
        exp_dir = _wait_for_loaded_worker(orchestrator, tmp_path / "out")
        orchestrator.send_signal(sig)
        assert orchestrator.wait(timeout=60) == 130
    finally:
        _stop(orchestrator)
    output = (tmp_path / "orchestrator.out").read_text()
    assert workers_under(tmp_path / "out") == [], output  # gone once the CLI has exited
    assert f"{sig.name}: stopping" in output
    assert "Press Ctrl+C again to stop at once" in output

    # the worker unwound: its backend closed, error.json says why
    log = (exp_dir / "worker.log").read_text()
    assert "interrupted: the experiment was unwound (backend closed), no result" in log
    assert "measured window:" not in log
    record = ErrorRecord.model_validate_json((exp_dir / "error.json").read_bytes())
    assert (record.category, record.error_type) == ("interrupted", "KeyboardInterrupt")
    assert not (exp_dir / "result.json").exists()

    campaign_dir = only_campaign_dir(tmp_path / "out")
    first, second = load_manifest(campaign_dir).entries
    assert (first.status, first.attempts) == ("interrupted", 1)
    assert first.error == f"interrupted by {sig.name}: the worker cleaned up and stopped"
    assert [(a.attempt, a.status) for a in first.attempt_history] == [(1, "interrupted")]
    assert (second.status, second.attempts) == ("pending", 0)  # nothing new started
    frame = pd.read_csv(campaign_dir / "results.csv")
    assert list(frame["status"]) == ["interrupted", "pending"]
    assert f"To run what is not done: lem resume {campaign_dir}" in output
    assert not (campaign_dir / "lem.lock").exists()  # released on the way out


def test_second_signal_kills_at_once(tmp_path: Path) -> None:
    """The worker hangs while cleaning up (a real process stuck in its cleanup, via a crash
    point): the first Ctrl+C waits for it (the grace period is 60 s), the second kills it."""
    orchestrator = _start(tmp_path, {"LEM_CRASHPOINT": "worker.interrupted:1:hang"})
    try:
        exp_dir = _wait_for_loaded_worker(orchestrator, tmp_path / "out")
        orchestrator.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        log = exp_dir / "worker.log"
        while b"interrupted: the experiment was unwound" not in log.read_bytes():
            assert time.monotonic() < deadline, "the worker never started cleaning up"
            time.sleep(0.05)
        time.sleep(1.0)
        assert orchestrator.poll() is None  # still waiting for the worker to clean up
        assert workers_under(exp_dir)  # which is hanging
        t0 = time.monotonic()
        orchestrator.send_signal(signal.SIGINT)
        assert orchestrator.wait(timeout=30) == 130
        assert time.monotonic() - t0 < 15
    finally:
        _stop(orchestrator)
    output = (tmp_path / "orchestrator.out").read_text()
    assert workers_under(tmp_path / "out") == [], output
    campaign_dir = only_campaign_dir(tmp_path / "out")
    first, second = load_manifest(campaign_dir).entries
    assert first.status == "interrupted", output
    assert first.error == "stopped at once by a second SIGINT; worker killed"
    assert second.status == "pending"
    assert list(pd.read_csv(campaign_dir / "results.csv")["status"]) == ["interrupted", "pending"]

    # resume would run the interrupted entry and the pending one
    proc = run_lem("resume", campaign_dir, "--dry-run", "--json", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    listed = json.loads(proc.stdout)["experiments"]
    assert [row.split(" cycle ")[0] for row in listed] == [
        first.experiment_id,
        second.experiment_id,
    ]


def test_worker_that_ignores_the_stop_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    """The local runner on its own: interrupt(grace_s) sends SIGTERM, and kills the worker's
    process group when it has not ended within grace_s."""
    planned = load_campaign(write(tmp_path / "long.yaml", LONG_CAMPAIGN)).experiments[0]
    exp_path = tmp_path / "run" / "exp.json"
    spec = ExperimentSpec(
        schema_fingerprint=schema_fingerprint(),
        experiment_id=planned.experiment_id,
        campaign_id="long_20250102T030405Z",
        campaign_name="long",
        cycle=1,
        total_cycles=1,
        attempt=1,
        output_dir=str(exp_path.parent),
        base_dir=str(tmp_path),
        cache_dir=str(tmp_path / ".cache"),
        config=planned.config,
    )
    write_text_atomic(exp_path, spec.model_dump_json())
    job = Job(
        exp_path=exp_path,
        output_dir=exp_path.parent,
        log_path=exp_path.parent / "worker.log",
        env={"LEM_CRASHPOINT": "worker.interrupted:1:hang", "HF_HUB_OFFLINE": "1"},
        timeout_s=600,
    )
    outcomes = []
    with LocalRunner() as runner:
        thread = threading.Thread(target=lambda: outcomes.append(runner.run(job)))
        thread.start()
        deadline = time.monotonic() + WAIT_S
        while LOADED not in (job.log_path.read_bytes() if job.log_path.exists() else b""):
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.05)
        t0 = time.monotonic()
        runner.interrupt(grace_s=2.0)
        thread.join(timeout=30)
        waited_s = time.monotonic() - t0
        # once interrupted, the runner starts nothing more
        size = job.log_path.stat().st_size
        assert runner.run(job) == NOT_STARTED
        assert job.log_path.stat().st_size == size
    assert not thread.is_alive()
    (outcome,) = outcomes
    assert outcome.returncode == -signal.SIGKILL
    assert not outcome.timed_out
    assert 2.0 <= waited_s < 15
    assert b"interrupted: the experiment was unwound" in job.log_path.read_bytes()
    assert wait_until_no_process_mentions(exp_path, within_s=5.0) == []
