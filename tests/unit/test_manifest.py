"""manifest.json: atomic persistence, round trip, what resume runs, clear errors."""

from __future__ import annotations

import json
import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config.campaign import CampaignConfig
from llenergymeasure.config.settings import UserSettings
from llenergymeasure.errors import ConfigError
from llenergymeasure.orchestrator.manifest import (
    MANIFEST_FILE,
    MANIFEST_VERSION,
    Manifest,
    ManifestEntry,
    ManifestStore,
)
from llenergymeasure.orchestrator.schedule import resolve_execution

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def entry(exp: str, cycle: int, status: str = "pending", **kw: object) -> ManifestEntry:
    return ManifestEntry.model_validate(
        {
            "experiment_id": exp,
            "cycle": cycle,
            "backend": "pytorch",
            "label": {"batch_size": cycle},
            "runner": "local",
            "status": status,
            "exp_path": f"{exp}/cycle-{cycle}/exp.json",
            **kw,
        }
    )


def manifest(entries: list[ManifestEntry]) -> Manifest:
    return Manifest(
        campaign_id="demo_20250102T030405Z",
        campaign_name="demo",
        config_hash="ab" * 32,
        schema_fingerprint="0123456789abcdef",
        created_at=T0,
        updated_at=T0,
        total_cycles=2,
        timeout_s=60.0,
        execution=resolve_execution(CampaignConfig(name="demo"), UserSettings()),
        entries=entries,
    )


# ------------------------------------------------------------------------------- atomic write


def test_atomic_write_creates_file_and_parents(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.json"
    write_text_atomic(path, "hello\n")
    assert path.read_text(encoding="utf-8") == "hello\n"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_atomic_write_replaces_content_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old content that is longer than the new one", encoding="utf-8")
    for i in range(5):
        write_text_atomic(path, f"v{i}")
    assert path.read_text(encoding="utf-8") == "v4"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_write_is_a_new_inode(tmp_path: Path) -> None:
    # os.replace swaps in a new file: a reader holding the old one never sees half a write
    path = tmp_path / "state.json"
    write_text_atomic(path, "first")
    before = path.stat().st_ino
    with path.open(encoding="utf-8") as held:
        write_text_atomic(path, "second")
        assert held.read() == "first"
    assert path.stat().st_ino != before
    assert path.read_text(encoding="utf-8") == "second"


def test_atomic_write_file_is_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_text_atomic(path, "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_atomic_write_failure_keeps_old_file_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_text_atomic(path, "good")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "bad \ud800 surrogate")  # cannot be encoded as UTF-8
    assert path.read_text(encoding="utf-8") == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_write_unicode(tmp_path: Path) -> None:
    path = tmp_path / "u.json"
    write_text_atomic(path, "énergie ⚡")
    assert path.read_bytes() == "énergie ⚡".encode()


# ------------------------------------------------------------------------------- round trip


def test_save_load_round_trip(tmp_path: Path) -> None:
    m = manifest(
        [
            entry("pytorch-aaa", 1, "done", attempts=1, result_path="x/result.json"),
            entry("pytorch-aaa", 2, "failed", attempts=2, error="boom", started_at=T0),
            entry("pytorch-bbb", 1, "running", attempts=1, started_at=T0),
            entry("pytorch-bbb", 2),
        ]
    )
    store = ManifestStore(tmp_path)
    store.save(m)
    assert store.path == tmp_path / MANIFEST_FILE
    loaded = store.load()
    assert loaded == m
    assert loaded.manifest_version == MANIFEST_VERSION
    assert [e.status for e in loaded.entries] == ["done", "failed", "running", "pending"]
    assert loaded.entries[1].error == "boom"
    assert loaded.entries[1].started_at == T0
    assert loaded.entries[0].label == {"batch_size": 1}
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_FILE]


def test_save_stamps_updated_at(tmp_path: Path) -> None:
    m = manifest([entry("e", 1)])
    ManifestStore(tmp_path).save(m)
    assert m.updated_at > T0
    assert m.created_at == T0
    raw = json.loads((tmp_path / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert datetime.fromisoformat(raw["updated_at"]) == m.updated_at


def test_save_overwrites_previous_state(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path)
    m = manifest([entry("e", 1), entry("e", 2)])
    store.save(m)
    m.entries[0].status = "done"
    m.entries[1].status = "failed"
    store.save(m)
    assert [e.status for e in store.load().entries] == ["done", "failed"]


# -------------------------------------------------------------------------------- resume set


def test_pending_is_everything_not_done_in_order() -> None:
    entries = [
        entry("a", 1, "done"),
        entry("a", 2, "running"),
        entry("b", 1, "failed"),
        entry("b", 2, "pending"),
        entry("c", 1, "done"),
        entry("c", 2, "running"),
    ]
    pending = manifest(entries).pending()
    assert [e.key for e in pending] == ["a/cycle-2", "b/cycle-1", "b/cycle-2", "c/cycle-2"]
    # the very entry objects, so updating them updates the manifest
    assert pending[0] is entries[1]


def test_pending_of_finished_campaign_is_empty() -> None:
    assert manifest([entry("a", 1, "done"), entry("a", 2, "done")]).pending() == []


def test_counts() -> None:
    m = manifest([entry("a", 1, "done"), entry("a", 2, "running"), entry("b", 1, "done")])
    assert m.counts() == {"pending": 0, "running": 1, "done": 2, "failed": 0}


def test_entry_key() -> None:
    assert entry("pytorch-abc", 3).key == "pytorch-abc/cycle-3"


def test_entry_status_is_validated_on_assignment() -> None:
    e = entry("a", 1)
    with pytest.raises(ValidationError):
        e.status = "finished"  # type: ignore[assignment]
    assert e.status == "pending"


def test_entry_defaults() -> None:
    e = entry("a", 1)
    assert (e.status, e.attempts, e.result_path, e.error) == ("pending", 0, None, None)
    assert e.started_at is None
    assert e.finished_at is None


# ----------------------------------------------------------------------------------- errors


def test_missing_manifest_is_not_a_campaign_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ManifestStore(tmp_path).load()
    message = str(info.value)
    assert "not a campaign directory" in message
    assert str(tmp_path) in message
    assert MANIFEST_FILE in message


def test_missing_directory_is_not_a_campaign_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a campaign directory"):
        ManifestStore(tmp_path / "nowhere").load()


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "[]",
        '{"campaign_id": "x"}',
        "\x00\x01binary",
    ],
)
def test_corrupt_manifest_is_a_config_error(tmp_path: Path, content: str) -> None:
    (tmp_path / MANIFEST_FILE).write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        ManifestStore(tmp_path).load()
    message = str(info.value)
    assert str(tmp_path / MANIFEST_FILE) in message
    assert "not a manifest" in message


def test_manifest_with_unknown_status_is_a_config_error(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path)
    store.save(manifest([entry("a", 1)]))
    raw = json.loads(store.path.read_text(encoding="utf-8"))
    raw["entries"][0]["status"] = "exploded"
    store.path.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ConfigError, match="not a manifest"):
        store.load()


def test_manifest_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_FILE).mkdir()
    with pytest.raises(ConfigError, match="unreadable or not a manifest"):
        ManifestStore(tmp_path).load()
