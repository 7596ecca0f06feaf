"""Failure isolation with real workers: one experiment failing (for real, in the worker) or
running past its time limit does not stop the campaign, and leaves a clear record."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from lem_cli import (
    explain,
    load_manifest,
    only_campaign_dir,
    processes_mentioning,
    run_lem,
    write,
)

from llenergymeasure.results.schema import ErrorRecord, ExperimentResult

pytestmark = pytest.mark.integration

BASE = """\
base:
  model: builtin:tiny-llama
  n_prompts: 2
  max_output_tokens: 4
  warmup: {runs: 0}
"""


def test_failing_experiment_is_isolated(tmp_path: Path) -> None:
    # The failing experiment runs first, so the good one shows that the campaign went on.
    campaign_file = write(
        tmp_path / "mixed.yaml",
        "name: mixed\ncycles: 1\n"
        + BASE
        + "experiments:\n"
        + "  - {model: /nonexistent/path}\n"
        + "  - {batch_size: 2}\n",
    )
    proc = run_lem("campaign", campaign_file, "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 1, explain(proc)
    campaign_dir = only_campaign_dir(tmp_path / "out")
    bad, good = load_manifest(campaign_dir).entries
    assert bad.label == {"model": "/nonexistent/path"}

    assert bad.status == "failed"
    assert bad.attempts == 1
    assert bad.result_path is None
    assert bad.error is not None
    assert bad.error == "BackendError: model directory /nonexistent/path does not exist"
    assert bad.finished_at is not None
    bad_dir = campaign_dir / Path(bad.exp_path).parent
    assert not (bad_dir / "result.json").exists()
    record = ErrorRecord.model_validate_json((bad_dir / "error.json").read_bytes())
    assert record.error_type == "BackendError"
    assert record.category == "backend"
    assert record.experiment_id == bad.experiment_id
    assert (record.cycle, record.attempt) == (1, 1)
    assert "/nonexistent/path" in record.message
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
    assert f"lem resume {campaign_dir}" in proc.stdout, explain(proc)


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
    """Loading torch alone takes longer than 0.5 s, so the worker is killed mid-start."""
    timeout_line = "timeout_s: 0.5\n" if how == "campaign-file" else "timeout_s: 3600\n"
    campaign_file = write(tmp_path / "slow.yaml", "name: slow\ncycles: 1\n" + timeout_line + BASE)
    flag = [] if how == "campaign-file" else ["--timeout", "0.5"]
    proc = run_lem("campaign", campaign_file, "-o", tmp_path / "out", *flag, cwd=tmp_path)
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
    assert f"lem resume {campaign_dir}" in proc.stdout, explain(proc)
