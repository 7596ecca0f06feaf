"""Statistics across cycles: for each configuration (or each `group_by` group) the mean, spread
and the Student-t confidence interval of the mean (llenergymeasure.stats) of every headline
metric.

The summary is long ("tidy"): one row per group and metric, with n, mean, std, cv, min, max,
ci_low, ci_high. A metric nobody measured (energy on a CPU) has n = 0 and nulls, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llenergymeasure.config.campaign import StatisticsConfig
from llenergymeasure.results.collate import QUALITY_REASONS, QUALITY_STATUS, write_tables
from llenergymeasure.stats import MEAN_METHOD, mean_ci

SUMMARY_STEM = "summary"

METRICS: dict[str, str] = {
    "energy_raw_j": "energy.energy_raw_j",
    "energy_adjusted_j": "energy.energy_adjusted_j",
    "energy_raw_per_output_token_j": "energy.energy_raw_per_output_token_j",
    "energy_adjusted_per_output_token_j": "energy.energy_adjusted_per_output_token_j",
    "facility_energy_j": "facility_energy_j",
    "co2_g": "co2_g",
    "output_tokens_per_s": "output_tokens_per_s",
    "latency_mean_s": "latency.mean_s",
    "latency_p50_s": "latency.p50_s",
    "latency_p99_s": "latency.p99_s",
    "peak_memory_mb": "peak_memory_mb",
}
"""Summary metric name -> column of the per-run table (results.csv)."""
SERVER_METRICS: dict[str, str] = {
    "achieved_rate_rps": "achieved_rate_rps",
    "ttft_p99_s": "ttft_p99_s",
    "itl_p99_s": "itl_p99_s",
    "goodput_rps": "goodput_rps",
    "energy_per_request_j": "energy_per_request_j",
    "window_coverage": "window_coverage",
}
"""Added to METRICS when the table has server levels (mode: server)."""
LEVEL = "level"
LEVEL_ORDER = "level_index"

STAT_COLUMNS = ("n", "mean", "std", "cv", "min", "max", "ci_low", "ci_high")

CONFIG_PREFIX = "config."


@dataclass(frozen=True)
class Stats:
    n: int
    mean: float | None = None
    std: float | None = None
    cv: float | None = None
    min: float | None = None
    max: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


def describe(values: np.ndarray, settings: StatisticsConfig) -> Stats:
    """n, mean, sample std, CV, min, max and the Student-t CI of the mean of `values`."""
    n = len(values)
    if n == 0:
        return Stats(n=0)
    mean, low, high = mean_ci(values, settings.confidence)
    std = float(values.std(ddof=1)) if n > 1 else None
    return Stats(
        n=n,
        mean=mean,
        std=std,
        cv=std / mean if std is not None and mean != 0 else None,
        min=float(values.min()),
        max=float(values.max()),
        ci_low=low,
        ci_high=high,
    )


VARIES_WITHIN = "varies_within"
"""Summary column: swept parameters not in group_by that differ inside the group."""
QUALITY = "quality"
"""Summary column: 'ok', or 'check (k of n runs): <experiment> cycle <c>: <reasons>'."""


def swept_parameters(runs: pd.DataFrame) -> list[str]:
    """Config parameters (without the `config.` prefix) that differ between the done runs."""
    done = runs[runs["status"] == "done"] if "status" in runs else runs
    swept = []
    for column in done.columns:
        if column.startswith(CONFIG_PREFIX) and done[column].astype(str).nunique() > 1:
            swept.append(column.removeprefix(CONFIG_PREFIX))
    return swept


def summarize(
    runs: pd.DataFrame, settings: StatisticsConfig, group_by: list[str] | None = None
) -> pd.DataFrame:
    """The summary of the done runs of a per-run table (results.csv's shape). group_by (else
    settings.group_by) names config parameters; without it each experiment is a group and
    the parameters swept across experiments come along as columns."""
    keys = group_by if group_by is not None else settings.group_by
    done = runs[runs["status"] == "done"] if len(runs) else runs
    pooled = [p for p in swept_parameters(done) if keys is not None and p not in keys]
    if keys is None:
        label_columns = ["experiment_id", *swept_parameters(done)]
        by = ["experiment_id"]
    else:
        label_columns = list(keys)
        by = list(keys)
    levels = LEVEL in done and bool(done[LEVEL].notna().any())
    if levels:  # a server experiment's levels are separate groups: cycles give CIs per level
        label_columns.append(LEVEL)
        by.append(LEVEL)
    done = done.rename(columns={CONFIG_PREFIX + k: k for k in label_columns})
    # a parameter of another backend's section has no column here: all its runs are null
    done = done.reindex(columns=[*done.columns, *(c for c in label_columns if c not in done)])
    out_columns = [
        *label_columns,
        "n_experiments",
        VARIES_WITHIN,
        QUALITY,
        "metric",
        *STAT_COLUMNS,
        "confidence",
        "ci_method",
    ]
    rows: list[dict[str, Any]] = []
    if len(done):
        groups = [g for _, g in done.groupby(by, dropna=False, sort=False)]
        order = [c for c in label_columns if c not in ("experiment_id", LEVEL)]
        if levels:
            order.append(LEVEL_ORDER)
        groups.sort(key=lambda g: [_sort_key(_plain(g[c].iloc[0])) for c in order])
        for group in groups:
            labels = {c: _plain(group[c].iloc[0]) for c in label_columns}
            quality = quality_note(group)
            for metric, column in (METRICS | SERVER_METRICS if levels else METRICS).items():
                values = _numbers(group, column)
                described = describe(values, settings)
                rows.append(
                    labels
                    | {
                        "n_experiments": int(group["experiment_id"].nunique()),
                        VARIES_WITHIN: _varies_within(group, pooled),
                        QUALITY: quality,
                        "metric": metric,
                        **{s: getattr(described, s) for s in STAT_COLUMNS},
                        "confidence": settings.confidence,
                        "ci_method": MEAN_METHOD,
                    }
                )
    frame = pd.DataFrame(rows, columns=out_columns)
    float_columns = [c for c in STAT_COLUMNS if c != "n"]
    frame[float_columns] = frame[float_columns].astype("Float64")
    return frame.astype({"n": "Int64", "n_experiments": "Int64"})


def quality_note(group: pd.DataFrame) -> str:
    """'ok' when every run of the group passed its quality record; else 'check', how many
    runs failed it, and which (experiment, cycle) and why. Failing runs stay in the
    statistics, flagged here: the reader decides (issue 17.5)."""
    if QUALITY_STATUS not in group:
        return "n/a"
    status = group[QUALITY_STATUS]
    failed = group[status.astype("string") == "check"]
    if not len(failed):
        return "ok" if status.notna().all() else "n/a"
    lines = [
        f"{row['experiment_id']} cycle {row['cycle']}: {_plain(row.get(QUALITY_REASONS)) or '?'}"
        for _, row in failed.iterrows()
    ]
    return f"check ({len(failed)} of {len(group)} runs): " + " | ".join(lines)


def _varies_within(group: pd.DataFrame, pooled: list[str]) -> str:
    """The swept parameters outside group_by that take more than one value in this group
    (comma-separated; empty: the group pools runs of one configuration only), so a pooled
    mean never hides what it mixes (issue 14 point 11)."""
    return ",".join(p for p in pooled if group[CONFIG_PREFIX + p].astype(str).nunique() > 1)


def write_summary(campaign_dir: Path, summary: pd.DataFrame) -> None:
    """summary.csv and summary.parquet beside results.csv."""
    write_tables(summary, campaign_dir, SUMMARY_STEM)


def _numbers(group: pd.DataFrame, column: str) -> np.ndarray:
    if column not in group:
        return np.array([], dtype=float)
    values = pd.to_numeric(group[column], errors="coerce").astype("Float64").dropna()
    return values.to_numpy(dtype=float)


def _sort_key(value: Any) -> tuple[int, float, str]:
    """Rows in the order of their swept values: numbers by size, then text, unset last."""
    if value is None:
        return (2, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _plain(value: Any) -> Any:
    """numpy/pandas scalars and NA -> plain Python values (for JSON and Parquet)."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value
