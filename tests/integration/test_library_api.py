"""The library API with real workers: run_experiment, run_campaign, warm-up convergence
recorded in results, and load_results."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from lem_cli import write

import llenergymeasure as lem
from llenergymeasure.api import ExperimentFailedError
from llenergymeasure.errors import ConfigError
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
