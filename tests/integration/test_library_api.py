"""The library API with real workers: run_experiment, run_campaign, warm-up convergence
recorded in results, and load_results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from lem_cli import CLI_TIMEOUT_S, lem_env, only_campaign_dir, write

import llenergymeasure as lem
from llenergymeasure.api import ExperimentFailedError
from llenergymeasure.errors import ConfigError
from llenergymeasure.orchestrator.gpu_locks import DeviceLocks
from llenergymeasure.results.aggregate import METRICS

pytestmark = pytest.mark.integration

SMALL = {"model": "builtin:tiny-llama", "n_prompts": 2, "max_output_tokens": 4}


def test_run_experiment_returns_its_result(tmp_path: Path) -> None:
    result = lem.run_experiment(
        {**SMALL, "warmup": {"runs": 1, "until_cv": 0.5, "window": 2, "max_runs": 4}},
        output_dir=tmp_path / "out",
        batch_size=2,
    )
    assert result.config.batch_size == 2
    assert result.n_requests == 2
    assert result.output_tokens == 2 * 4
    assert result.cycle == 1
    # warm-up: at least a full window, at most max_runs; what it did is recorded
    assert 2 <= result.offline.warmup.runs <= 4
    assert len(result.offline.warmup.latencies_s) == result.offline.warmup.runs
    assert isinstance(result.offline.warmup.converged, bool)
    assert result.offline.warmup.final_cv is not None
    if not result.offline.warmup.converged:
        assert any("warm-up did not converge" in w for w in result.measurement_warnings)
    (campaign_dir,) = (tmp_path / "out").iterdir()
    assert (campaign_dir / "summary.csv").is_file()


def test_run_experiment_failure_raises_with_the_cause(tmp_path: Path) -> None:
    with pytest.raises(ExperimentFailedError) as info:
        lem.run_experiment({**SMALL, "pytorch": {"device": "cuda"}}, output_dir=tmp_path)
    assert "BackendError" in str(info.value)
    assert "pytorch.device is 'cuda'" in str(info.value)


def test_run_experiment_bad_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        lem.run_experiment(SMALL, output_dir=tmp_path / "out", batch_size=0)
    assert not (tmp_path / "out").exists()


def test_run_campaign_takes_overrides_and_loads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # its .lem-config.yaml: no gaps on this CPU
    campaign_file = write(
        tmp_path / "lib.yaml",
        "name: lib\n"
        "base: {model: builtin:tiny-llama, n_prompts: 2, max_output_tokens: 4}\n"
        "experiments:\n"
        "  - {warmup: {runs: 1}}\n"
        # a CV of two wall-clock timings under 1e-9 does not happen: this one cannot converge
        "  - {warmup: {runs: 1, until_cv: 0.000000001, window: 2, max_runs: 3}}\n",
    )
    campaign = lem.run_campaign(campaign_file, order="grouped", cycles=1)
    assert campaign.manifest.total_cycles == 1
    assert campaign.manifest.execution.order == "grouped"
    assert campaign.failed == []
    fixed, never = campaign.results
    assert (fixed.offline.warmup.runs, fixed.offline.warmup.converged) == (1, None)
    assert (never.offline.warmup.runs, never.offline.warmup.converged) == (3, False)
    assert any("warm-up did not converge" in w for w in never.measurement_warnings)
    assert not any("warm-up did not converge" in w for w in fixed.measurement_warnings)
    assert len(campaign.summary) == 2 * len(METRICS)

    loaded = lem.load_results(campaign.campaign_dir)
    assert len(loaded.runs) == 2
    fixed_row, never_row = loaded.runs["warmup.converged"].tolist()
    assert fixed_row is pd.NA
    assert never_row is False or never_row == False  # noqa: E712 (numpy/pandas bool)
    assert loaded.summary.equals(campaign.summary)
    pooled = lem.load_results(campaign.campaign_dir, group_by=["backend"]).summary
    assert set(pooled["n_experiments"]) == {2}


# The README's snippet as a new user pastes it: no `if __name__ == "__main__":` guard.
SNIPPET = """import llenergymeasure as lem

result = lem.run_experiment({"model": "builtin:tiny-llama", "n_prompts": 2}, batch_size=2)
print("tokens/s:", result.output_tokens_per_s)
"""


def test_snippet_without_a_main_guard_runs_once_and_says_it_waits(tmp_path: Path) -> None:
    """The forked worker must not re-run the script: that started a second campaign, which
    waited for ever on the first one's CPU lock (issue 28.1). While the call waits for a
    device another campaign holds, it says so (a logging warning), as the CLI does."""
    script = write(tmp_path / "snippet.py", SNIPPET)
    locks = tmp_path / "locks"
    env = lem_env() | {"LEM_GPU_LOCK_DIR": str(locks)}
    with DeviceLocks(["cpu"], "holder", notice=print, directory=locks) as held:
        proc = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert proc.stderr is not None
            first = proc.stderr.readline()  # pytest-timeout ends a call that never says it
            assert "waiting for the CPU" in first and "campaign holder" in first, first
            held.release()
            stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0, stdout + stderr
    assert stdout.count("tokens/s:") == 1, stdout  # the script ran once, not once per worker
    assert "got the CPU" in stderr, stderr
    only_campaign_dir(tmp_path / "results")
