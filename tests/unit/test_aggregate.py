"""Statistics across cycles: the numbers (the interval itself: test_stats.py), all-null
metrics, group_by pooling, and summary.csv / summary.parquet."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from unit_results import finish_campaign

from llenergymeasure.config import load_campaign
from llenergymeasure.config.campaign import StatisticsConfig
from llenergymeasure.config.settings import UserSettings
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.display import summary_table
from llenergymeasure.measure.hoststat import HostUsage
from llenergymeasure.measure.quality import host_bound_reason
from llenergymeasure.orchestrator.layout import create_campaign
from llenergymeasure.orchestrator.manifest import ManifestStore
from llenergymeasure.results.aggregate import (
    METRICS,
    STAT_COLUMNS,
    describe,
    summarize,
    swept_parameters,
    write_summary,
)
from llenergymeasure.results.collate import (
    QUALITY_REASONS,
    QUALITY_STATUS,
    level_quality,
    results_frame,
)
from llenergymeasure.results.schema import EnergyFigures, ExperimentResult, QualityRecord

WriteYaml = Callable[..., Path]
SETTINGS = StatisticsConfig(confidence=0.95)

# ------------------------------------------------------------------------------ the numbers


def test_describe_matches_numpy() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0])
    s = describe(values, SETTINGS)
    assert s.n == 4
    assert s.mean == 2.5
    assert s.std == pytest.approx(np.std(values, ddof=1))
    assert s.cv == pytest.approx(np.std(values, ddof=1) / 2.5)
    assert (s.min, s.max) == (1.0, 4.0)
    half = 3.182446305284263 * np.std(values, ddof=1) / 2  # t(0.975, 3) x sd / sqrt(4)
    assert (s.ci_low, s.ci_high) == pytest.approx((2.5 - half, 2.5 + half))


def test_nothing_measured_is_null_not_zero() -> None:
    s = describe(np.array([], dtype=float), SETTINGS)
    assert s.n == 0
    assert all(getattr(s, k) is None for k in STAT_COLUMNS if k != "n")


def test_one_value_has_no_spread_and_no_ci() -> None:
    s = describe(np.array([7.0]), SETTINGS)
    assert (s.n, s.mean, s.min, s.max) == (1, 7.0, 7.0, 7.0)
    assert (s.std, s.cv, s.ci_low, s.ci_high) == (None, None, None, None)


def test_constant_values_have_no_interval() -> None:
    """A zero-width interval would claim certainty: identical runs give none (stats.mean_ci)."""
    s = describe(np.array([2.0, 2.0, 2.0]), SETTINGS)
    assert (s.std, s.cv, s.ci_low, s.ci_high) == (0.0, 0.0, None, None)


# ----------------------------------------------------------------------------- summaries

GRID = """\
name: stats
cycles: 3
gaps: {between_experiments_s: 0, between_cycles_s: 0}
grid:
  batch_size: [1, 2]
  precision: [fp32, bf16]
"""


def energy_for(spec: ExperimentSpec) -> dict[str, object]:
    """Known values: J/token = batch_size + cycle/10 (precision does not matter)."""
    per_token = spec.config.batch_size + spec.cycle / 10
    return {
        "energy": EnergyFigures(
            energy_method="test",
            energy_raw_j=per_token * 80,
            energy_raw_per_output_token_j=per_token,
        ),
        "output_tokens_per_s": 10.0 * spec.config.batch_size,
    }


def campaign_runs(
    tmp_path: Path,
    write_yaml: WriteYaml,
    overrides_for: Callable[[ExperimentSpec], dict[str, object]] = lambda spec: {},
) -> pd.DataFrame:
    directory = create_campaign(
        load_campaign(write_yaml(GRID)), tmp_path / "out", settings=UserSettings()
    )
    manifest = finish_campaign(directory, overrides_for)
    return results_frame(directory, manifest)


def test_per_experiment_summary(tmp_path: Path, write_yaml: WriteYaml) -> None:
    runs = campaign_runs(tmp_path, write_yaml, energy_for)
    summary = summarize(runs, SETTINGS)
    assert list(summary.columns) == [
        "experiment_id",
        "precision",  # swept parameters, in the config's field order
        "batch_size",
        "n_experiments",
        "varies_within",
        "quality",
        "metric",
        *STAT_COLUMNS,
        "confidence",
        "ci_method",
    ]
    assert len(summary) == 4 * len(METRICS)
    energy = summary[summary["metric"] == "energy_raw_per_output_token_j"]
    for _, row in energy.iterrows():
        expected = [row["batch_size"] + c / 10 for c in (1, 2, 3)]
        assert row["n"] == 3
        assert row["n_experiments"] == 1
        assert row["mean"] == pytest.approx(np.mean(expected))
        assert row["std"] == pytest.approx(np.std(expected, ddof=1))
        assert row["min"] == pytest.approx(min(expected))
        assert row["max"] == pytest.approx(max(expected))
        half = 4.302652729749464 * 0.1 / np.sqrt(3)  # t(0.975, 2) x sd / sqrt(n)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(
            (row["mean"] - half, row["mean"] + half)
        )
        assert (row["confidence"], row["ci_method"]) == (0.95, "Student t")
    throughput = summary[summary["metric"] == "output_tokens_per_s"]
    assert sorted(throughput["mean"]) == [10.0, 10.0, 20.0, 20.0]
    # rows sorted by the swept parameters in column order, not in the order runs ended
    order = list(zip(throughput["precision"], throughput["batch_size"], strict=True))
    assert order == [("bf16", 1), ("bf16", 2), ("fp32", 1), ("fp32", 2)]


def test_all_null_energy_gives_n_0_and_nulls(tmp_path: Path, write_yaml: WriteYaml) -> None:
    runs = campaign_runs(tmp_path, write_yaml)  # EnergyFigures(): every energy field null
    summary = summarize(runs, SETTINGS)
    for metric in METRICS:
        rows = summary[summary["metric"] == metric]
        if metric.startswith("energy") or metric in {"facility_energy_j", "co2_g"}:
            assert (rows["n"] == 0).all()
            for column in STAT_COLUMNS[1:]:
                assert rows[column].isna().all(), (metric, column)
        else:
            assert (rows["n"] == 3).all()
    write_summary(tmp_path, summary)
    for table in (
        pd.read_csv(tmp_path / "summary.csv"),
        pd.read_parquet(tmp_path / "summary.parquet"),
    ):
        energy = table[table["metric"] == "energy_raw_j"]
        assert energy["mean"].isna().all()
        assert (energy["n"] == 0).all()
        assert len(table) == len(summary)


def test_group_by_pools_the_other_dimensions(tmp_path: Path, write_yaml: WriteYaml) -> None:
    runs = campaign_runs(tmp_path, write_yaml, energy_for)
    summary = summarize(runs, SETTINGS, group_by=["batch_size"])
    assert list(summary.columns[:5]) == [
        "batch_size",
        "n_experiments",
        "varies_within",
        "quality",
        "metric",
    ]
    assert (summary["varies_within"] == "precision").all()  # what each group pools is named
    energy = summary[summary["metric"] == "energy_raw_per_output_token_j"].set_index("batch_size")
    for batch_size in (1, 2):
        # both precisions x 3 cycles pooled
        expected = [batch_size + c / 10 for c in (1, 2, 3)] * 2
        assert energy.loc[batch_size, "n"] == 6
        assert energy.loc[batch_size, "n_experiments"] == 2
        assert energy.loc[batch_size, "mean"] == pytest.approx(np.mean(expected))
        assert energy.loc[batch_size, "std"] == pytest.approx(np.std(expected, ddof=1))


def test_group_by_from_settings_and_nested_keys(tmp_path: Path, write_yaml: WriteYaml) -> None:
    runs = campaign_runs(tmp_path, write_yaml, energy_for)
    settings = StatisticsConfig(group_by=["backend", "pytorch.attn_implementation"])
    summary = summarize(runs, settings)
    assert set(summary["backend"]) == {"pytorch"}
    assert set(summary["pytorch.attn_implementation"]) == {"sdpa"}
    assert (summary["n_experiments"] == 4).all()
    assert (summary[summary["metric"] == "output_tokens_per_s"]["n"] == 12).all()


def test_only_done_runs_count(tmp_path: Path, write_yaml: WriteYaml) -> None:
    directory = create_campaign(
        load_campaign(write_yaml(GRID)), tmp_path / "out", settings=UserSettings()
    )
    manifest = finish_campaign(directory, energy_for)
    manifest.entries[0].status, manifest.entries[0].error = "failed", "BackendError: oom"
    ManifestStore(directory).save(manifest)
    summary = summarize(results_frame(directory, manifest), SETTINGS)
    failed_id = manifest.entries[0].experiment_id
    rows = summary[(summary["experiment_id"] == failed_id) & (summary["metric"] == "latency_p50_s")]
    assert list(rows["n"]) == [2]


def test_nothing_done_gives_an_empty_summary(tmp_path: Path, write_yaml: WriteYaml) -> None:
    directory = create_campaign(
        load_campaign(write_yaml(GRID)), tmp_path / "out", settings=UserSettings()
    )
    summary = summarize(results_frame(directory, ManifestStore(directory).load()), SETTINGS)
    assert summary.empty
    assert "metric" in summary.columns
    write_summary(tmp_path, summary)
    assert pd.read_parquet(tmp_path / "summary.parquet").empty


def test_swept_parameters(tmp_path: Path, write_yaml: WriteYaml) -> None:
    runs = campaign_runs(tmp_path, write_yaml)
    assert swept_parameters(runs) == ["precision", "batch_size"]
    assert swept_parameters(runs[runs["config.batch_size"] == 1]) == ["precision"]


HOST_BOUND = host_bound_reason(0.25, HostUsage(steal_s=0.01, process_cpu_s=10.3), 10.2)


def quality_for(spec: ExperimentSpec) -> dict[str, object]:
    """Cycle 2 of batch size 2 failed its quality record (host-bound); every other run passed."""
    bad = spec.config.batch_size == 2 and spec.cycle == 2
    return {
        "quality": QualityRecord(
            status="check" if bad else "ok",
            reasons=[HOST_BOUND] if bad else [],
            window_s=10.2,
            min_window_s=10.0,
            window_meets_minimum=True,
            passes=1,
            gpu_busy_share=0.25 if bad else 0.9,
            host_bound=bad,
        )
    }


def test_summary_flags_runs_that_fail_their_quality_record(
    tmp_path: Path, write_yaml: WriteYaml
) -> None:
    runs = campaign_runs(tmp_path, write_yaml, quality_for)
    assert set(runs["quality.status"]) == {"ok", "check"}
    summary = summarize(runs, SETTINGS)
    firsts = summary.drop_duplicates("experiment_id")
    assert HOST_BOUND.startswith("host-bound: a GPU kernel ran in 25% of the window (under 50%)")
    assert HOST_BOUND.endswith("worker CPU 10.3 s, steal 0.01 s over 10.2 s")
    for _, row in firsts.iterrows():
        expected = f"check (1 of 3 runs): {row['experiment_id']} cycle 2: {HOST_BOUND}"
        assert row["quality"] == (expected if row["batch_size"] == 2 else "ok")
    console = Console(record=True, width=300)
    console.print(summary_table("t", summary))
    text = console.export_text()  # compact: a code per kind of reason, explained once below
    assert text.count("check 1/3: q1 q2") == 2 and HOST_BOUND not in text
    assert text.count("q1: host-bound: a GPU kernel ran in N% of the window (under N%)") == 1
    assert text.count("q2: worker CPU N s, steal N s over N s") == 1
    console.print(summary_table("t", summary, verbose=True))  # -v: in full, what lem results shows
    assert console.export_text().count("host-bound: a GPU kernel ran in 25%") == 2
    # a result written before the quality record existed says so, never 'ok'
    old = summarize(campaign_runs(tmp_path / "old", write_yaml), SETTINGS)
    assert set(old["quality"]) == {"n/a"}


def test_server_levels_are_groups_of_their_own_with_cis_across_cycles() -> None:
    # results.csv's shape for one server experiment, 3 cycles x 2 levels (collate.level_columns)
    runs = pd.DataFrame(
        [
            {
                "experiment_id": "pytorch-abc",
                "cycle": cycle,
                "status": "done",
                "config.mode": "server",
                "level": level,
                "level_index": index,
                "energy.energy_raw_per_output_token_j": 0.1 * (index + 1) + cycle / 100,
                "achieved_rate_rps": rate + cycle / 10,
            }
            for cycle in (1, 2, 3)
            for index, (level, rate) in enumerate([("r16", 16.0), ("r4", 4.0)])
        ]
    )
    summary = summarize(runs, SETTINGS)
    rate = summary[summary["metric"] == "achieved_rate_rps"]
    assert list(rate["level"]) == ["r16", "r4"]  # level order, not text order
    assert list(rate["n"]) == [3, 3] and rate["ci_low"].notna().all()
    assert rate["mean"].tolist() == pytest.approx([16.2, 4.2])
    energy = summary[summary["metric"] == "energy_raw_per_output_token_j"]
    assert energy["mean"].tolist() == pytest.approx([0.12, 0.22])


def test_a_server_level_row_carries_its_own_doubts_not_its_siblings() -> None:
    # the H200 server campaign's result (docs/validation E): each level's warnings are its own
    recorded = json.loads(
        (Path(__file__).parents[2] / "docs/validation/serve_h200/result.json").read_text()
    )
    del recorded["config"]["server"]["lag_budget_s"]  # retired by issue 25.7 (max_lag_fraction)
    result = ExperimentResult.model_validate(recorded)
    assert result.server is not None and result.quality is not None
    levels = result.server.levels
    assert all(lv.doubts() for lv in levels)  # this run gave every level a warning
    shared = [r for r in result.quality.reasons if not r.startswith("level ")]
    for level in levels:
        row = level_quality(result, level)
        assert row[QUALITY_REASONS] == "; ".join([*shared, *level.doubts()])
        assert row[QUALITY_STATUS] == "check"
