"""results.csv / results.parquet: one flat row per experiment and cycle, failed ones included."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import ValidationError

from llenergymeasure.contract import RESULT_FILE
from llenergymeasure.faults import crashpoint
from llenergymeasure.flatten import flatten
from llenergymeasure.results.schema import ExperimentResult, ServerLevel

if TYPE_CHECKING:
    from llenergymeasure.results.views import CampaignView, EntryView

RESULTS_STEM = "results"
RESULTS_CSV = f"{RESULTS_STEM}.csv"
RESULTS_PARQUET = f"{RESULTS_STEM}.parquet"
J_PER_KWH = 3.6e6
QUALITY_STATUS = "quality.status"
QUALITY_REASONS = "quality.reasons"


def result_row(result: ExperimentResult) -> dict[str, Any]:
    """Flatten a result: nested keys joined with '.', lists dropped, warnings joined; the
    offline section's columns keep their names (the server's levels are rows of their own)."""
    data = result.model_dump(
        mode="json", exclude={"request_latencies_s", "measurement_warnings", "offline"}
    )
    data |= result.offline.model_dump(mode="json") if result.offline else {}
    row = {k: v for k, v in flatten(data).items() if not isinstance(v, (list, dict))}
    row["measurement_warnings"] = "; ".join(result.measurement_warnings)
    if result.quality is not None:
        row[QUALITY_REASONS] = "; ".join(result.quality.reasons)
    return row


def results_frame(campaign_dir: Path, manifest: CampaignView) -> pd.DataFrame:
    """One row per manifest entry, in run order, from each entry's result.json (the ground
    truth); the orchestrator's warnings about an entry join the worker's."""
    settings = manifest.execution.settings
    pue = settings.pue if settings is not None else None
    carbon = settings.carbon_intensity_g_per_kwh if settings is not None else None
    rows: list[dict[str, Any]] = []
    for entry in manifest.entries:
        row: dict[str, Any] = {
            "experiment_id": entry.experiment_id,
            "cycle": entry.cycle,
            "status": entry.status,
            "attempts": entry.attempts,
            "runner": entry.runner,
            "error": entry.error,
            "gpus": ",".join(map(str, entry.gpus)) if entry.gpus is not None else None,
            "facility_energy_j": None,
            "co2_g": None,
        }
        if entry.status != "done" and (partial := _partial(campaign_dir, entry)) is not None:
            # a server experiment failed mid-run: the levels it finished, and the one it cut
            for level in partial.server.levels if partial.server else []:
                rows.append(
                    row | level_columns(level, entry.warnings) | level_quality(partial, level)
                )
            continue
        if entry.status == "done" and entry.result_path:
            try:
                result = ExperimentResult.model_validate_json(
                    (campaign_dir / entry.result_path).read_bytes()
                )
            except (OSError, ValidationError):
                row["status"], row["error"] = "failed", "result.json missing or unreadable"
            else:
                row |= {k: v for k, v in result_row(result).items() if k not in row}
                warnings = [*entry.warnings, *result.measurement_warnings]
                row["measurement_warnings"] = "; ".join(warnings)
                row |= derived_energy(result.energy.energy_raw_j, pue, carbon)
                if result.server is not None:
                    for level in result.server.levels:
                        level_row = row | level_columns(level, entry.warnings)
                        level_row |= level_quality(result, level)
                        level_row |= derived_energy(level.energy_window_j, pue, carbon)
                        rows.append(level_row)
                    continue
        rows.append(row)
    # Nullable dtypes: a failed row's gaps must not turn integer columns into floats.
    return pd.DataFrame(rows).convert_dtypes()


def _partial(campaign_dir: Path, entry: EntryView) -> ExperimentResult | None:
    """The partial result.json a failed server experiment left (its finished levels)."""
    try:
        path = campaign_dir / Path(entry.exp_path).parent / RESULT_FILE
        result = ExperimentResult.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None
    return result if result.partial and result.experiment_id == entry.experiment_id else None


LEVEL_COLUMN = "level"
"""results.csv: the server load level a row measured (empty for offline experiments)."""


def failed_levels(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """The server levels that failed (rows of results.csv's shape), each with its reason:
    every table and report names them, as it names failed runs."""
    if LEVEL_COLUMN not in runs or not len(runs):
        return []
    rows = runs[runs[LEVEL_COLUMN].notna() & (runs["status"] == "failed")]
    columns = ["experiment_id", "cycle", LEVEL_COLUMN, "error"]
    plain = rows[columns].astype(object).where(rows[columns].notna(), None)  # JSON-ready
    return [{str(c): v for c, v in r.items()} for r in plain.to_dict("records")]


def failed_levels_count(levels: list[dict[str, Any]]) -> str:
    """What the runs' counts add for failed levels ('' when none)."""
    return f", {len(levels)} server level(s) failed" if levels else ""


def failed_levels_text(levels: list[dict[str, Any]]) -> list[str]:
    return [
        f"level {lv['level']} of {lv['experiment_id']} cycle {lv['cycle']}: {lv['error']}"
        for lv in levels
    ]


def level_columns(level: ServerLevel, entry_warnings: list[str]) -> dict[str, Any]:
    """A server level as a results row: its own figures under their names, and the offline
    headline columns (energy, throughput, latency, window) refilled from the level so that
    summaries and plots read one column per metric whichever the mode."""
    data = level.model_dump(mode="json", exclude={"errors", "warnings", "level"})
    out: dict[str, Any] = {LEVEL_COLUMN: level.level, **data}
    out |= {
        "status": "failed" if level.failed else "done",
        "error": level.failed_reason,
        "measured_duration_s": level.window_s,
        "n_requests": level.window_requests,
        "input_tokens": level.window_input_tokens,
        "output_tokens": level.window_output_tokens,
        "requests_per_s": None,
        "total_tokens_per_s": None,
        "energy.energy_raw_j": level.energy_window_j,
        "energy.energy_adjusted_j": level.energy_window_adjusted_j,
        "energy.energy_raw_per_output_token_j": level.energy_per_output_token_j,
        "energy.energy_adjusted_per_output_token_j": level.energy_adjusted_per_output_token_j,
        "energy.energy_raw_per_request_j": level.energy_per_request_j,
        "energy.energy_adjusted_per_request_j": None,
        "energy.energy_window_s": level.window_s if level.energy_window_j is not None else None,
        "latency.mean_s": None,
        "latency.p50_s": level.e2e_p50_s,
        "latency.p90_s": level.e2e_p90_s,
        "latency.p99_s": level.e2e_p99_s,
        "latency.max_s": None,
        "measurement_warnings": "; ".join([*entry_warnings, *level.warnings]),
    }
    return out


def level_quality(result: ExperimentResult, level: ServerLevel) -> dict[str, Any]:
    """A level row's quality: the experiment's shared doubts and this level's own, not its
    sibling levels' (each level is a row of its own in the summary's quality column)."""
    if result.quality is None or result.server is None:
        return {}
    others = {d for lv in result.server.levels if lv is not level for d in lv.doubts()}
    reasons = [r for r in result.quality.reasons if r not in others]
    return {QUALITY_STATUS: "check" if reasons else "ok", QUALITY_REASONS: "; ".join(reasons)}


def derived_energy(
    energy_raw_j: float | None, pue: float | None, carbon_g_per_kwh: float | None
) -> dict[str, float | None]:
    """facility_energy_j (energy_raw_j x PUE) and co2_g (facility energy, else the GPU energy
    where no PUE is set, times the carbon intensity), from the user settings the campaign
    recorded. Null where energy was not measured or the setting is not given: never a
    number made from nothing."""
    facility = energy_raw_j * pue if energy_raw_j is not None and pue is not None else None
    basis = facility if facility is not None else energy_raw_j
    co2 = None
    if basis is not None and carbon_g_per_kwh is not None:
        co2 = basis / J_PER_KWH * carbon_g_per_kwh
    return {"facility_energy_j": facility, "co2_g": co2}


def collate(campaign_dir: Path, manifest: CampaignView) -> pd.DataFrame:
    """Rebuild both tables (results.csv, results.parquet) from the manifest and result files."""
    frame = results_frame(campaign_dir, manifest)
    write_tables(frame, campaign_dir, RESULTS_STEM)
    return frame


def write_tables(frame: pd.DataFrame, directory: Path, stem: str) -> None:
    """<stem>.csv and <stem>.parquet, each swapped in whole (a reader never sees half)."""
    _replace(directory / f"{stem}.csv", lambda p: frame.to_csv(p, index=False))
    _replace(directory / f"{stem}.parquet", lambda p: frame.to_parquet(p, index=False))


def _replace(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
    except BaseException:  # a full disk: no torn temp file left behind (issue 27.8)
        tmp.unlink(missing_ok=True)
        raise
    crashpoint(f"table.{path.name}")
    tmp.replace(path)
