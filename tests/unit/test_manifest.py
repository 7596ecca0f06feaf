"""manifest.json: atomic persistence, round trip, what resume runs, clear errors."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config.campaign import CampaignConfig
from llenergymeasure.config.settings import UserSettings
from llenergymeasure.errors import ConfigError
from llenergymeasure.orchestrator.manifest import (
    MANIFEST_VERSION,
    Manifest,
    ManifestEntry,
    ManifestStore,
)
from llenergymeasure.orchestrator.names import MANIFEST_FILE
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
            entry(
                "pytorch-aaa", 1, "done", attempts=1, result_path="pytorch-aaa/cycle-1/result.json"
            ),
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


def test_pending_is_what_has_not_ended_in_order() -> None:
    """`lem resume` runs pending, interrupted and running (its orchestrator died) entries;
    failed and oom ones only with retry_failed."""
    entries = [
        entry("a", 1, "done"),
        entry("a", 2, "running"),
        entry("b", 1, "failed"),
        entry("b", 2, "pending"),
        entry("c", 1, "oom"),
        entry("c", 2, "interrupted"),
    ]
    pending = manifest(entries).pending()
    assert [e.key for e in pending] == ["a/cycle-2", "b/cycle-2", "c/cycle-2"]
    # the very entry objects, so updating them updates the manifest
    assert pending[0] is entries[1]
    with_failed = manifest(entries).pending(retry_failed=True)
    assert [e.key for e in with_failed] == [e.key for e in entries if e.status != "done"]


def test_pending_of_finished_campaign_is_empty() -> None:
    assert manifest([entry("a", 1, "done"), entry("a", 2, "done")]).pending() == []
    assert manifest([entry("a", 1, "done"), entry("a", 2, "failed")]).pending() == []


def test_counts() -> None:
    m = manifest([entry("a", 1, "done"), entry("a", 2, "running"), entry("b", 1, "done")])
    assert m.counts() == {
        "done": 2,
        "failed": 0,
        "oom": 0,
        "interrupted": 0,
        "running": 1,
        "pending": 0,
    }
    assert m.counts_text() == "2 done, 0 failed, 1 running, 0 pending"


def test_attempt_history_round_trip(tmp_path: Path) -> None:
    history = [
        {"attempt": 1, "status": "lost", "reason": "orchestrator died", "runner": "local"},
        {
            "attempt": 2,
            "status": "oom",
            "reason": "out of memory, batch_size=64",
            "runner": "local",
        },
        {"attempt": 3, "status": "done", "runner": "docker", "started_at": T0, "finished_at": T0},
    ]
    m = manifest([entry("a", 1, "done", attempts=3, attempt_history=history)])
    store = ManifestStore(tmp_path)
    store.save(m)
    (loaded,) = store.load().entries
    assert [(a.attempt, a.status, a.reason) for a in loaded.attempt_history] == [
        (1, "lost", "orchestrator died"),
        (2, "oom", "out of memory, batch_size=64"),
        (3, "done", None),
    ]
    assert loaded.attempt_history[2].finished_at == T0


def test_a_manifest_of_slurm_fields_loads_as_the_generic_job_reference(tmp_path: Path) -> None:
    """Manifests written before issue 29 name a batch job slurm_job_id/slurm_node/slurm_gpus:
    they load (and resume) as job_id/job_node/job_gpus, and are saved under the new names."""
    attempt = {"attempt": 1, "status": "lost", "runner": "slurm", "slurm_job_id": "41"}
    old = entry(
        "a", 1, "running", runner="slurm", attempts=2, attempt_history=[attempt],
        slurm_job_id="42", slurm_node="node7", slurm_gpus=2,
    )  # fmt: skip
    store = ManifestStore(tmp_path)
    store.save(manifest([old]))
    (loaded,) = store.load().entries
    assert (loaded.job_id, loaded.job_node, loaded.job_gpus) == ("42", "node7", 2)
    assert loaded.attempt_history[0].job_id == "41"
    saved = json.loads((tmp_path / MANIFEST_FILE).read_text())["entries"][0]
    assert saved["job_id"] == "42" and "slurm_job_id" not in saved


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
    assert "is damaged" in message and f"lem repair {tmp_path}" in message
    assert "\n" not in message  # one line: not pydantic's report


def test_manifest_with_unknown_status_is_a_config_error(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path)
    store.save(manifest([entry("a", 1)]))
    raw = json.loads(store.path.read_text(encoding="utf-8"))
    raw["entries"][0]["status"] = "exploded"
    store.path.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"damaged \(entries\.0\.status: Input should be"):
        store.load()


def test_manifest_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_FILE).mkdir()
    with pytest.raises(ConfigError, match="is unreadable"):
        ManifestStore(tmp_path).load()


# ------------------------------------------------------------------------------- the journal


def _saved(tmp_path: Path, entries: list[ManifestEntry]) -> tuple[ManifestStore, Manifest]:
    store = ManifestStore(tmp_path)
    m = manifest(entries)
    store.save(m)
    return store, m


def test_update_appends_to_the_journal_and_leaves_the_snapshot(tmp_path: Path) -> None:
    store, m = _saved(tmp_path, [entry("a", 1), entry("b", 1)])
    snapshot = store.path.read_bytes()
    m.entries[1].status, m.entries[1].attempts = "running", 1
    store.update(m, m.entries[1])
    assert store.path.read_bytes() == snapshot
    lines = store.journal_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2  # header + one record
    assert json.loads(lines[1])["entry"]["experiment_id"] == "b"
    loaded = ManifestStore(tmp_path).load()
    assert loaded == m
    assert loaded.updated_at == m.updated_at > T0


def test_replay_applies_records_in_order(tmp_path: Path) -> None:
    store, m = _saved(tmp_path, [entry("a", 1), entry("a", 2), entry("b", 1)])
    steps = [(0, "running"), (2, "running"), (0, "done"), (2, "failed"), (2, "running")]
    for index, status in steps:
        m.entries[index].status = status  # type: ignore[assignment]
        m.entries[index].attempts += 1
        store.update(m, m.entries[index])
    loaded = ManifestStore(tmp_path).load()
    assert [(e.status, e.attempts) for e in loaded.entries] == [
        ("done", 2),
        ("pending", 0),
        ("running", 3),
    ]
    assert [e.key for e in loaded.entries] == ["a/cycle-1", "a/cycle-2", "b/cycle-1"]


@pytest.mark.parametrize(
    "torn",
    [b'{"updated_at": "2025-01-02T03:04', b"\x00" * 40 + b"\n", b'{"updated_at": 1}\n'],
    ids=["cut-mid-line", "zeros-with-newline", "complete-but-invalid"],
)
def test_torn_last_line_is_ignored_and_cut_before_the_next_append(
    tmp_path: Path, torn: bytes
) -> None:
    store, m = _saved(tmp_path, [entry("a", 1), entry("b", 1)])
    m.entries[0].status = "running"
    store.update(m, m.entries[0])
    with store.journal_path.open("ab") as f:
        f.write(torn)  # a crash in the middle of the next append

    reader = ManifestStore(tmp_path)
    loaded = reader.load()
    assert [e.status for e in loaded.entries] == ["running", "pending"]
    assert store.journal_path.read_bytes().endswith(torn)  # loading never writes

    loaded.entries[1].status = "running"  # the next writer appends after the last good line
    reader.update(loaded, loaded.entries[1])
    assert torn not in store.journal_path.read_bytes()
    assert [e.status for e in ManifestStore(tmp_path).load().entries] == ["running", "running"]


def test_torn_header_means_no_journal(tmp_path: Path) -> None:
    store, m = _saved(tmp_path, [entry("a", 1)])
    store.journal_path.write_bytes(b'{"snapshot_updated_at": "20')
    assert ManifestStore(tmp_path).load() == m


def test_corrupt_record_before_the_last_is_a_config_error(tmp_path: Path) -> None:
    store, m = _saved(tmp_path, [entry("a", 1)])
    for status in ("running", "done"):
        m.entries[0].status = status  # type: ignore[assignment]
        store.update(m, m.entries[0])
    lines = store.journal_path.read_bytes().split(b"\n")
    lines[1] = b'{"garbage": true}'
    store.journal_path.write_bytes(b"\n".join(lines))
    with pytest.raises(ConfigError) as info:
        ManifestStore(tmp_path).load()
    message = str(info.value)
    assert str(store.journal_path) in message
    assert "line 2" in message


def test_record_of_an_unknown_entry_is_a_config_error(tmp_path: Path) -> None:
    store, m = _saved(tmp_path, [entry("a", 1)])
    stranger = entry("z", 9, "done")
    store.update(m, stranger)
    with pytest.raises(ConfigError, match=r"z/cycle-9.*different campaigns"):
        ManifestStore(tmp_path).load()


def test_save_compacts_the_journal_into_the_snapshot(tmp_path: Path) -> None:
    store, m = _saved(tmp_path, [entry("a", 1), entry("b", 1)])
    m.entries[0].status = "done"
    store.update(m, m.entries[0])
    assert store.journal_path.exists()
    store.save(m)
    assert not store.journal_path.exists()
    raw = json.loads(store.path.read_text(encoding="utf-8"))
    assert [e["status"] for e in raw["entries"]] == ["done", "pending"]
    assert ManifestStore(tmp_path).load() == m


def test_journal_left_by_a_crash_during_compaction_is_stale(tmp_path: Path) -> None:
    """Snapshot replaced, then a crash before the old journal was removed: the old journal names
    the old snapshot and must not be replayed over the new one (it would undo later changes)."""
    store, m = _saved(tmp_path, [entry("a", 1)])
    m.entries[0].status = "running"
    store.update(m, m.entries[0])
    old_journal = store.journal_path.read_bytes()
    m.entries[0].status = "done"  # changed in memory, then compacted (as recovery does)
    store.save(m)
    store.journal_path.write_bytes(old_journal)  # the unlink never reached the disk
    loaded = ManifestStore(tmp_path).load()
    assert loaded.entries[0].status == "done"
    # and a writer starts a fresh journal for the new snapshot
    loaded.entries[0].attempts = 5
    ManifestStore(tmp_path).update(loaded, loaded.entries[0])
    assert ManifestStore(tmp_path).load().entries[0] == loaded.entries[0]


def test_journal_is_compacted_once_it_outgrows_the_snapshot(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path, compact_min_bytes=0)
    m = manifest([entry("a", 1), entry("b", 1)])
    store.save(m)
    snapshot_bytes = store.path.stat().st_size
    compactions = 0
    for attempt in range(1, 40):
        m.entries[attempt % 2].attempts = attempt
        before = store.path.stat().st_ino
        store.update(m, m.entries[attempt % 2])
        compactions += store.path.stat().st_ino != before
        if store.journal_path.exists():
            assert store.journal_path.stat().st_size <= snapshot_bytes + 1024
    assert compactions >= 3
    assert ManifestStore(tmp_path).load() == m


WRITER = """
import sys
from pathlib import Path
from llenergymeasure.orchestrator.manifest import ManifestStore

store = ManifestStore(Path(sys.argv[1]), compact_min_bytes=0)
m = store.load()
start = max(e.attempts for e in m.entries) + 1  # continues where the killed writer stopped
for attempt in range(start, start + 100_000):
    e = m.entries[attempt % len(m.entries)]
    e.attempts = attempt
    store.update(m, e)
    print(attempt, flush=True)
"""


def test_sigkill_at_any_moment_leaves_a_loadable_state(tmp_path: Path) -> None:
    """A real writer process (appends, compactions every few updates) is SIGKILLed at varied
    moments; readers load while it writes. Every load succeeds and holds every update the writer
    reported as written, and nothing it never started."""
    m = manifest([entry(f"e{i}", 1) for i in range(3)])
    ManifestStore(tmp_path).save(m)
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    reported = 0
    for round_ in range(6):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        target = reported + 5 + 17 * round_
        while reported < target:
            reported = int(proc.stdout.readline())
            seen = max(e.attempts for e in ManifestStore(tmp_path).load().entries)
            assert seen >= reported  # a concurrent reader sees every completed update
        proc.kill()
        proc.wait()
        for line in proc.stdout:  # updates it completed after our last read
            reported = int(line)
        proc.stdout.close()
        loaded = ManifestStore(tmp_path).load()
        last = max(e.attempts for e in loaded.entries)
        assert reported <= last <= reported + 1
        # each entry holds the last attempt written to it
        for index, e in enumerate(loaded.entries):
            assert e.attempts == 0 or e.attempts % len(loaded.entries) == index


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("exp_path", "../../elsewhere/cycle-1/exp.json"),
        ("exp_path", "/etc/cycle-1/exp.json"),
        ("result_path", "a/../../cycle-1/result.json"),
        ("experiment_id", ".."),
    ],
)
def test_a_tampered_manifest_cannot_point_outside_the_campaign(
    tmp_path: Path, key: str, value: str
) -> None:
    store = ManifestStore(tmp_path)
    store.save(manifest([entry("pytorch-aaaaaaaaaaaa", 1)]))
    data = json.loads((tmp_path / MANIFEST_FILE).read_text())
    data["entries"][0][key] = value
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=key):
        ManifestStore(tmp_path).load()
