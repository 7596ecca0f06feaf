"""Failure isolation with real workers: one experiment failing (for real, in the worker) or
running past its time limit does not stop the campaign, and leaves a clear record."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from lem_cli import (
    HANG_IN_GENERATE,
    explain,
    load_manifest,
    only_campaign_dir,
    processes_mentioning,
    run_lem,
    tiny_base,
    write,
)

from llenergymeasure.results.schema import ErrorRecord, ExperimentResult

pytestmark = pytest.mark.integration

BASE = tiny_base()


def test_failing_experiment_is_isolated(tmp_path: Path) -> None:
    # The failing experiment runs first, so the good one shows that the campaign went on. It
    # fails in the worker (a CPU host has no CUDA device), past the host's pre-flight.
    campaign_file = write(
        tmp_path / "mixed.yaml",
        "name: mixed\ncycles: 1\n"
        + BASE
        + "experiments:\n"
        + "  - {pytorch: {device: cuda}}\n"
        + "  - {batch_size: 2}\n",
    )
    proc = run_lem("campaign", campaign_file, "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 1, explain(proc)
    campaign_dir = only_campaign_dir(tmp_path / "out")
    bad, good = load_manifest(campaign_dir).entries
    assert bad.label == {"pytorch.device": "cuda"}

    assert bad.status == "failed"
    assert bad.attempts == 1
    assert bad.result_path is None
    assert bad.error is not None
    assert bad.error == "BackendError: pytorch.device is 'cuda' but torch sees no CUDA device"
    assert bad.finished_at is not None
    bad_dir = campaign_dir / Path(bad.exp_path).parent
    assert not (bad_dir / "result.json").exists()
    record = ErrorRecord.model_validate_json((bad_dir / "error.json").read_bytes())
    assert record.error_type == "BackendError"
    assert record.category == "backend"
    assert record.experiment_id == bad.experiment_id
    assert (record.cycle, record.attempt) == (1, 1)
    assert "pytorch.device" in record.message
    assert record.traceback.startswith("Traceback (most recent call last)")
    assert "BackendError" in record.traceback
    assert "experiment failed" in (bad_dir / "worker.log").read_text()

    assert good.status == "done"
    assert good.attempts == 1
    assert good.error is None
    result = ExperimentResult.model_validate_json(
        (campaign_dir / str(good.result_path)).read_bytes()
    )
    assert result.output_tokens == 2 * 4

    frame = pd.read_csv(campaign_dir / "results.csv")
    assert len(frame) == 2
    rows = {r["experiment_id"]: r for r in frame.to_dict("records")}
    assert rows[bad.experiment_id]["status"] == "failed"
    assert rows[bad.experiment_id]["error"] == bad.error
    assert pd.isna(rows[bad.experiment_id]["output_tokens_per_s"])
    assert rows[good.experiment_id]["status"] == "done"
    assert rows[good.experiment_id]["output_tokens_per_s"] > 0
    assert len(pd.read_parquet(campaign_dir / "results.parquet")) == 2

    assert "1 done, 1 failed" in proc.stdout, explain(proc)
    assert f"log: {bad_dir / 'worker.log'}" in proc.stdout, explain(proc)
    assert f"To retry the failed ones: lem resume --retry-failed {campaign_dir}" in proc.stdout
    assert "To run what is not done" not in proc.stdout  # nothing is left but the failure


def test_bad_input_fails_before_anything_runs(tmp_path: Path) -> None:
    """A JSONL file with fewer prompts than n_prompts is caught on the host: exit 2, no
    campaign directory, no worker."""
    write(tmp_path / "two.jsonl", '{"prompt": "one"}\n{"prompt": "two"}\n')
    campaign_file = write(
        tmp_path / "short.yaml",
        "name: short\ncycles: 1\n"
        "base:\n  n_prompts: 3\n  prompts: {source: jsonl, path: two.jsonl}\n",
    )
    proc = run_lem("campaign", campaign_file, "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 2, explain(proc)
    assert "n_prompts is 3" in proc.stderr, explain(proc)
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("how", ["campaign-file", "cli-flag"])
def test_timeout_kills_the_worker(tmp_path: Path, how: str) -> None:
    """A worker still running at the timeout (here: hanging in generate) is killed, and the
    run fails saying so."""
    timeout_line = "timeout_s: 0.5\n" if how == "campaign-file" else "timeout_s: 3600\n"
    campaign_file = write(tmp_path / "slow.yaml", "name: slow\ncycles: 1\n" + timeout_line + BASE)
    flag = [] if how == "campaign-file" else ["--timeout", "0.5"]
    proc = run_lem(
        "campaign", campaign_file, "-o", tmp_path / "out", *flag, cwd=tmp_path,
        env=HANG_IN_GENERATE,
    )  # fmt: skip
    assert proc.returncode == 1, explain(proc)
    campaign_dir = only_campaign_dir(tmp_path / "out")
    (entry,) = load_manifest(campaign_dir).entries
    assert entry.status == "failed"
    assert entry.attempts == 1
    assert entry.error is not None
    assert entry.error.startswith("timed out after 0.5 s; worker killed"), entry.error
    exp_dir = campaign_dir / Path(entry.exp_path).parent
    assert not (exp_dir / "result.json").exists()
    assert (exp_dir / "worker.log").exists()
    # the kill is synchronous: by the time the CLI has exited, the worker is gone
    assert processes_mentioning(exp_dir) == []
    frame = pd.read_csv(campaign_dir / "results.csv")
    assert list(frame["status"]) == ["failed"]
    assert "timed out" in frame["error"][0]
    assert f"lem resume --retry-failed {campaign_dir}" in proc.stdout, explain(proc)


# A worker failing in the ways a real one does: a segfault, CUDA running out of memory (raised
# as torch's own error: this machine has no GPU to exhaust), exiting without a result. The
# crash point (llenergymeasure/faults.py) fires inside the worker's measured window, for the
# experiment named by its LEM_EXPERIMENT_ID only.
TWO = "cycles: 1\n" + BASE + "grid:\n  seed: [1, 2]\n"


def _ids(campaign_file: Path, cwd: Path) -> list[str]:
    proc = run_lem("campaign", campaign_file, "--dry-run", "--json", cwd=cwd)
    assert proc.returncode == 0, explain(proc)
    return [row.split(" cycle ")[0] for row in json.loads(proc.stdout)["experiments"]]


def _run_with_fault(
    tmp_path: Path, name: str, fault: str, *args: str, extra: str = ""
) -> tuple[subprocess.CompletedProcess[str], Path, list[str]]:
    campaign_file = write(tmp_path / f"{name}.yaml", f"name: {name}\n{extra}" + TWO)
    ids = _ids(campaign_file, tmp_path)
    env = {"LEM_CRASHPOINT": fault.format(first=ids[0])}
    proc = run_lem("campaign", campaign_file, "-o", tmp_path / "out", *args, cwd=tmp_path, env=env)
    return proc, only_campaign_dir(tmp_path / "out"), ids


def test_segfaulting_worker_is_failed_with_its_log_tail_and_the_campaign_goes_on(
    tmp_path: Path,
) -> None:
    proc, campaign_dir, ids = _run_with_fault(
        tmp_path, "segv", "worker.generate:1:segv@LEM_EXPERIMENT_ID={first}"
    )
    assert proc.returncode == 1, explain(proc)
    bad, good = load_manifest(campaign_dir).entries
    assert (bad.experiment_id, bad.status, bad.attempts) == (ids[0], "failed", 1)
    assert bad.error is not None
    assert bad.error.startswith("worker was killed by SIGSEGV without writing a result. Log tail:")
    assert "loaded in" in bad.error  # the tail of its log says how far it got
    assert [(a.status, a.reason) for a in bad.attempt_history] == [("failed", bad.error)]
    assert good.status == "done"
    assert f"failed {bad.experiment_id} cycle 1 (seed=1): worker was killed by SIGSEGV" in (
        proc.stdout
    )
    assert f"To retry the failed ones: lem resume --retry-failed {campaign_dir}" in proc.stdout


def test_cuda_out_of_memory_is_marked_oom_with_the_settings_that_did_not_fit(
    tmp_path: Path,
) -> None:
    # retries: 2 -- yet running out of memory is not retried: it recurs with the same config
    proc, campaign_dir, _ = _run_with_fault(
        tmp_path, "oom", "worker.generate:1:oom@LEM_EXPERIMENT_ID={first}", extra="retries: 2\n"
    )
    assert proc.returncode == 1, explain(proc)
    bad, good = load_manifest(campaign_dir).entries
    assert (bad.status, bad.attempts) == ("oom", 1)
    assert bad.error is not None
    assert bad.error.startswith(
        "out of memory with model=builtin:tiny-llama, backend=pytorch, precision=fp32, "
        "quantization=None, batch_size=1, n_prompts=2, max_input_tokens="
    ), bad.error
    assert "max_output_tokens=4" in bad.error
    assert "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB" in bad.error
    record = ErrorRecord.model_validate_json(
        (campaign_dir / Path(bad.exp_path).parent / "error.json").read_bytes()
    )
    assert (record.category, record.error_type) == ("oom", "OutOfMemoryError")
    assert good.status == "done"
    frame = pd.read_csv(campaign_dir / "results.csv")
    assert list(frame["status"]) == ["oom", "done"]
    assert "1 done, 0 failed, 1 oom, 0 pending" in proc.stdout, explain(proc)
    assert f"oom {bad.experiment_id} cycle 1 (seed=1): out of memory with" in proc.stdout


def test_worker_exiting_without_a_result_is_failed(tmp_path: Path) -> None:
    proc, campaign_dir, _ = _run_with_fault(
        tmp_path, "noresult", "worker.before_result:1:exit@LEM_EXPERIMENT_ID={first}"
    )
    assert proc.returncode == 1, explain(proc)
    bad, good = load_manifest(campaign_dir).entries
    assert bad.status == "failed"
    assert (bad.error or "").startswith("worker exited with code 0 without writing a result.")
    assert good.status == "done"


def test_retries_record_each_attempt_and_retry_failed_runs_the_rest(tmp_path: Path) -> None:
    """--retries 1 (the file says 0): the first experiment segfaults on every attempt, the
    second on its first attempt only."""
    fault = "worker.generate:1:segv@LEM_EXPERIMENT_ID={first},worker.generate:1:segv@LEM_ATTEMPT=1"
    proc, campaign_dir, _ = _run_with_fault(
        tmp_path, "retries", fault, "--retries", "1", extra="retries: 0\n"
    )
    assert proc.returncode == 1, explain(proc)
    bad, good = load_manifest(campaign_dir).entries
    assert (bad.status, bad.attempts) == ("failed", 2)
    assert [a.status for a in bad.attempt_history] == ["failed", "failed"]
    assert all("killed by SIGSEGV" in (a.reason or "") for a in bad.attempt_history)
    assert (good.status, good.attempts) == ("done", 2)
    assert [(a.attempt, a.status) for a in good.attempt_history] == [(1, "failed"), (2, "done")]
    assert "killed by SIGSEGV" in (good.attempt_history[0].reason or "")
    assert f"retry {good.experiment_id} cycle 1 (seed=2) (attempt 2 of 2)" in proc.stderr
    frame = pd.read_csv(campaign_dir / "results.csv")
    assert list(frame["attempts"]) == [2, 2]

    # resume alone leaves the failure; --retry-failed runs it (no fault armed now)
    proc = run_lem("resume", campaign_dir, cwd=tmp_path)
    assert proc.returncode == 1, explain(proc)
    assert f"to run them again: lem resume --retry-failed {campaign_dir}" in proc.stderr
    proc = run_lem("resume", "--retry-failed", campaign_dir, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    bad, good = load_manifest(campaign_dir).entries
    assert (bad.status, bad.attempts) == ("done", 3)
    assert [a.status for a in bad.attempt_history] == ["failed", "failed", "done"]
    assert (good.status, good.attempts) == ("done", 2)  # not touched
