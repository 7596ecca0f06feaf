"""Result schema version 2 (a core and one section per mode) reads version-1 files, and its
fingerprint refuses an image of version 1.

result_v1_offline.json was written by main at 32f1d53 (schema 1, fingerprint 500a7cc7bee9f986):
the tiny model, 2 prompts, on a CPU. The server file is the recorded H200 campaign's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.results import schema
from llenergymeasure.results.collate import result_row
from llenergymeasure.results.schema import ExperimentResult, OfflineRecord, schema_fingerprint

HERE = Path(__file__).parent
V1_OFFLINE = HERE / "result_v1_offline.json"
V1_SERVER = HERE.parents[1] / "docs/validation/serve_h200/result.json"
V1_FINGERPRINT = "500a7cc7bee9f986"


def v1(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    assert data["schema_version"] == "1"
    (data["config"]["server"] or {}).pop("lag_budget_s", None)  # retired by issue 25.7
    return data


def test_a_version_1_offline_result_reads_into_the_offline_section() -> None:
    old = v1(V1_OFFLINE)
    result = ExperimentResult.model_validate(old)
    assert result.schema_version == "2" and result.offline is not None and result.server is None
    assert result.offline.model_dump(mode="json") == {k: old[k] for k in OfflineRecord.model_fields}
    for key in ("output_tokens_per_s", "measured_duration_s", "request_latencies_s", "quality"):
        assert result.model_dump(mode="json")[key] == old[key]
    # written again, it is version 2 and reads back the same
    again = ExperimentResult.model_validate_json(result.model_dump_json())
    assert again == result and "engine_import_s" not in json.loads(result.model_dump_json())


def test_results_csv_keeps_its_columns_for_a_version_1_file() -> None:
    old = v1(V1_OFFLINE)
    row = result_row(ExperimentResult.model_validate(old))
    assert row["engine_import_s"] == old["engine_import_s"]
    assert row["warmup.runs"] == old["warmup"]["runs"]
    assert row["peak_memory_mb"] == old["peak_memory_mb"]
    assert not any(k.startswith("offline.") for k in row)


def test_a_version_1_server_result_loses_its_zero_filled_offline_fields() -> None:
    old = v1(V1_SERVER)
    assert old["engine_import_s"] == 0.0 and old["warmup_s"] == 0.0  # what version 1 wrote
    result = ExperimentResult.model_validate(old)
    assert result.offline is None and result.server is not None
    assert [lv.level for lv in result.server.levels] == [
        lv["level"] for lv in old["server"]["levels"]
    ]
    assert result.energy.energy_raw_j == old["energy"]["energy_raw_j"]


def test_the_fingerprint_refuses_an_image_of_version_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image carries the fingerprint of the schema it was built with (runners/docker.py
    refuses another): main's version 1, and this schema with version 1's number, both differ."""
    current = schema_fingerprint()
    assert current != V1_FINGERPRINT
    monkeypatch.setattr(schema, "SCHEMA_VERSION", "1")
    assert schema_fingerprint() != current
    defs = ExperimentResult.model_json_schema()["$defs"]
    assert {"OfflineRecord", "ServerRecord"} <= set(defs)  # each section is in what is hashed
