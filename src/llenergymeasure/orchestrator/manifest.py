"""The campaign's state, one entry per experiment and cycle, in two files.

manifest.json is a snapshot, replaced atomically (temp file + fsync + os.replace). Each entry
change after it is one line appended to manifest.journal and fsync'd, so a status change costs
the same in a campaign of ten experiments or of 100,000 (rewriting the snapshot each time made a
campaign O(N^2)). Loading replays the journal over the snapshot. The journal's first line names
the snapshot it continues (the snapshot's updated_at), so a journal left behind by a crash just
after a compaction is recognised as stale and ignored; a last line torn by a crash mid-append is
ignored too. `save` compacts: it writes the whole state as a new snapshot and drops the journal.

The result file stays the ground truth: an entry that is not `done` but whose result.json is
complete is recovered as done instead of being run again.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config.campaign import Execution
from llenergymeasure.config.choices import RunnerChoice
from llenergymeasure.errors import ConfigError
from llenergymeasure.faults import crashpoint
from llenergymeasure.gc_pause import gc_paused
from llenergymeasure.orchestrator.names import EXPERIMENTS_FILE, MANIFEST_FILE

JOURNAL_FILE = "manifest.journal"
COMPACT_MIN_BYTES = 1 << 20
"""The journal is folded into the snapshot when it outgrows both the snapshot and this."""
LOAD_TRIES = 5
MANIFEST_VERSION = "2"

Status = Literal["pending", "running", "done", "failed", "oom", "interrupted"]
"""pending: not started; running: started and not ended (found so by a new orchestrator: its
orchestrator died); done: result.json complete; failed: ended without a result (the error
says why); oom: failed by running out of memory; interrupted: stopped by Ctrl+C/SIGTERM."""
FAILED: tuple[Status, ...] = ("failed", "oom")
"""Ended without a result on their own: `lem resume` leaves them, `--retry-failed` reruns them."""

AttemptStatus = Literal["done", "failed", "oom", "interrupted", "lost"]
"""How an attempt ended; lost: its orchestrator died while it ran."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Attempt(BaseModel):
    """One attempt at an entry, as it ended."""

    model_config = ConfigDict(extra="forbid")

    attempt: int
    status: AttemptStatus
    reason: str | None = Field(None, description="Why it did not end done.")
    runner: str
    job_id: str | None = Field(
        None,
        description="A batch runner's job of the attempt.",
        validation_alias=AliasChoices("job_id", "slurm_job_id"),  # manifests before issue 29
    )
    started_at: datetime | None = None
    finished_at: datetime | None = None


ID_PATTERN = r"^[A-Za-z0-9_-]+$"
"""Experiment ids name directories: no separator, no dot, so no path outside the campaign."""
ENTRY_FILE_PATTERN = r"^[A-Za-z0-9_-]+/cycle-[0-9]+/{name}$"
"""exp_path and result_path: a tampered manifest cannot point a resume outside the campaign."""


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    experiment_id: str = Field(pattern=ID_PATTERN)
    cycle: int
    backend: str
    label: dict[str, Any] = Field(default_factory=dict)
    runner: str = Field(description="The runner that ran it (before that: the one asked for).")
    container_name: str | None = Field(None, description="Docker runners: where it ran.")
    container_id: str | None = None
    image_digest: str | None = Field(None, description="Docker runners: the image's id.")
    container_start_s: float | None = Field(
        None,
        description="docker-persistent: seconds of this attempt spent starting its long-lived "
        "container (a campaign's first experiment per backend), inside started_at..finished_at.",
    )
    job_id: str | None = Field(
        None,
        description="A batch runner's job of the attempt.",
        validation_alias=AliasChoices("job_id", "slurm_job_id"),  # manifests before issue 29
    )
    job_node: str | None = Field(
        None,
        description="A batch runner's node it ran on.",
        validation_alias=AliasChoices("job_node", "slurm_node"),
    )
    job_gpus: int | None = Field(
        None,
        description="A batch runner's GPUs requested.",
        validation_alias=AliasChoices("job_gpus", "slurm_gpus"),
    )
    status: Status = "pending"
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exp_path: str = Field(
        description="exp.json, relative to the campaign directory.",
        pattern=ENTRY_FILE_PATTERN.format(name=r"exp\.json"),
    )
    result_path: str | None = Field(
        None,
        description="result.json once done, relative.",
        pattern=ENTRY_FILE_PATTERN.format(name=r"result\.json"),
    )
    error: str | None = Field(None, description="One-line cause of the last failure.")
    attempt_history: list[Attempt] = Field(
        default_factory=list, description="Every ended attempt, oldest first, with its reason."
    )
    gpus: list[int] | None = Field(
        None, description="GPU indices the last attempt was pinned to; null: not pinned."
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="The orchestrator's warnings about the last attempt (e.g. thermal floor).",
    )

    @property
    def key(self) -> str:
        return f"{self.experiment_id}/cycle-{self.cycle}"


class SkippedEntry(BaseModel):
    """A grid combination the campaign left out because its backend cannot run it."""

    model_config = ConfigDict(extra="forbid")

    label: dict[str, Any]
    reason: str


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    manifest_version: str = MANIFEST_VERSION
    campaign_id: str
    campaign_name: str
    config_hash: str
    schema_fingerprint: str
    created_at: datetime
    updated_at: datetime
    total_cycles: int
    timeout_s: float = Field(description="Per-experiment limit from the campaign file.")
    retries: int = Field(0, description="Extra attempts after a failure (campaign file).")
    execution: Execution = Field(description="Effective order, gaps, thermal floor, statistics.")
    runner_choice: RunnerChoice | None = Field(
        None, description="The campaign file's `runner:`; `lem resume` honours it too."
    )
    cold_start: bool = False
    entries: list[ManifestEntry]
    skipped: list[SkippedEntry] = Field(
        default_factory=list, description="Unsupported grid combinations (skip_invalid: true)."
    )

    def pending(self, retry_failed: bool = False) -> list[ManifestEntry]:
        """What `lem resume` runs: every entry that has not ended on its own (pending,
        interrupted, and running: its orchestrator died); failed and oom entries too with
        retry_failed. Like GNU parallel's --resume / --resume-failed: a failure rerun by
        default would repeat, unasked, what is likely to fail the same way."""
        skip = ("done",) if retry_failed else ("done", *FAILED)
        return [e for e in self.entries if e.status not in skip]

    def failed(self) -> list[ManifestEntry]:
        """Entries that ended without a result on their own (failed, oom)."""
        return [e for e in self.entries if e.status in FAILED]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("done", "failed", "oom", "interrupted", "running", "pending"), 0)
        for e in self.entries:
            out[e.status] += 1
        return out

    def counts_text(self) -> str:
        """'3 done, 1 failed, 2 pending' plus any other status that is not zero."""
        counts = self.counts()
        always = ("done", "failed", "pending")
        return ", ".join(f"{n} {status}" for status, n in counts.items() if status in always or n)


class _JournalHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snapshot_updated_at: datetime = Field(description="The snapshot this journal continues.")


class _JournalRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    updated_at: datetime
    entry: ManifestEntry


class ManifestStore:
    """Owns manifest.json and manifest.journal of one campaign directory. One writer (the
    campaign loop) and any number of readers; loading never writes."""

    def __init__(self, campaign_dir: Path, compact_min_bytes: int = COMPACT_MIN_BYTES) -> None:
        self.campaign_dir = campaign_dir
        self.compact_min_bytes = compact_min_bytes
        self.path = campaign_dir / MANIFEST_FILE
        self.journal_path = campaign_dir / JOURNAL_FILE
        self._lock = threading.Lock()
        self._snapshot_stamp: datetime | None = None
        """updated_at of the snapshot on disk, as this store last read or wrote it."""
        self._snapshot_bytes = 0
        self._journal_bytes: int | None = None
        """Size of the journal once this store has checked it for appending; None before."""

    def load(self) -> Manifest:
        """The snapshot with the journal replayed over it. A load that races a compaction
        starts again, so a reader never mixes a new snapshot with an old journal."""
        with self._lock:
            for _ in range(LOAD_TRIES - 1):
                before = _identity(self.path)
                manifest = self._load()
                if _identity(self.path) == before:
                    return manifest
            return self._load()

    def update(self, manifest: Manifest, entry: ManifestEntry) -> None:
        """Record one entry's new state: a line appended to the journal and fsync'd, whatever
        the size of the campaign. The manifest must be one this store loaded or saved."""
        with self._lock:
            manifest.updated_at = utcnow()
            line = _JournalRecord(updated_at=manifest.updated_at, entry=entry).model_dump_json()
            data = line.encode() + b"\n"
            size = self._journal_bytes if self._journal_bytes is not None else self._start_journal()
            with self.journal_path.open("ab") as f:
                # Two writes, so the crash tests can stop a process with half a line on disk:
                # the torn line a load must tolerate.
                half = len(data) // 2
                f.write(data[:half])
                f.flush()
                crashpoint("manifest.journal.half")
                f.write(data[half:])
                f.flush()
                os.fsync(f.fileno())
            crashpoint("manifest.journal.appended")
            self._journal_bytes = size + len(data)
            # Folding the journal in once it outgrows the snapshot keeps each change O(1)
            # amortised and bounds what a load replays.
            if self._journal_bytes > max(self._snapshot_bytes, self.compact_min_bytes):
                self._save(manifest)

    def save(self, manifest: Manifest) -> None:
        """Write the whole state as the new snapshot and drop the journal (compaction)."""
        with self._lock:
            self._save(manifest)

    def _load(self) -> Manifest:
        with gc_paused():  # a large campaign's entries: see gc_pause.py
            return self._load_state()

    def _load_state(self) -> Manifest:
        manifest, self._snapshot_bytes = self._read_snapshot()
        self._snapshot_stamp, self._journal_bytes = manifest.updated_at, None
        found = self._read_journal(manifest.updated_at)
        if found is None:
            return manifest
        records, _ = found
        index = {e.key: i for i, e in enumerate(manifest.entries)}
        for record in records:
            position = index.get(record.entry.key)
            if position is None:
                raise ConfigError(
                    f"{self.journal_path} records experiment {record.entry.key}, which "
                    f"{self.path} does not list: the two files are from different campaigns"
                )
            manifest.entries[position] = record.entry
        if records:
            manifest.updated_at = records[-1].updated_at
        return manifest

    def _read_snapshot(self) -> tuple[Manifest, int]:
        """The snapshot, parsed and validated in one pass (pydantic-core): the version is
        looked up on its own only to explain a snapshot that does not validate."""
        try:
            text = self.path.read_bytes()
        except FileNotFoundError as e:
            if (self.campaign_dir / EXPERIMENTS_FILE).is_file():
                raise self._damaged(f"{MANIFEST_FILE} is missing") from e
            raise ConfigError(
                f"{self.campaign_dir} is not a campaign directory (no {MANIFEST_FILE})"
            ) from e
        except OSError as e:
            raise ConfigError(f"{self.path} is unreadable: {e}") from e
        try:
            manifest = Manifest.model_validate_json(text)
        except ValidationError as e:
            self._check_version(_manifest_version(text))
            raise self._damaged(f"{self.path} is damaged ({_first_error(e)})") from e
        self._check_version(manifest.manifest_version)
        return manifest, len(text)

    def _damaged(self, what: str) -> ConfigError:
        """One line: what is wrong and the command that rebuilds the manifest."""
        return ConfigError(
            f"{what}; rebuild it from the result files and the journal with: "
            f"lem repair {self.campaign_dir}"
        )

    def _check_version(self, version: object) -> None:
        if version is not None and version != MANIFEST_VERSION:
            raise ConfigError(
                f"{self.path} has manifest version {version}; this llenergymeasure reads "
                f"version {MANIFEST_VERSION}: use the version that created the campaign"
            )

    def _read_journal(self, stamp: datetime) -> tuple[list[_JournalRecord], int] | None:
        """The journal's records and the byte length they span; None when there is no
        journal for this snapshot (none at all, a stale one, or its header never landed)."""
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ConfigError(f"{self.journal_path} is unreadable: {e}") from e
        # A record is committed by its newline; bytes after the last one are a torn append.
        *lines, _torn = data.split(b"\n")
        if not lines:
            return None
        try:
            header = _JournalHeader.model_validate_json(lines[0])
        except ValidationError as e:
            if len(lines) == 1:  # the header itself was cut short
                return None
            raise self._damaged(
                f"{self.journal_path}, line 1: not a journal header ({_first_error(e)})"
            ) from e
        if header.snapshot_updated_at != stamp:
            return None
        records: list[_JournalRecord] = []
        end = len(lines[0]) + 1
        for number, line in enumerate(lines[1:], start=2):
            try:
                records.append(_JournalRecord.model_validate_json(line))
            except ValidationError as e:
                if number == len(lines):  # the last line: an append a crash cut short
                    break
                raise self._damaged(
                    f"{self.journal_path}, line {number}: not a manifest journal record, and "
                    f"only the last line may be torn ({_first_error(e)})"
                ) from e
            end += len(line) + 1
        return records, end

    def _start_journal(self) -> int:
        """Make the journal ready for appending: a torn tail cut off, or a fresh journal
        (header only) where there is none for the current snapshot. Returns its size."""
        if self._snapshot_stamp is None:
            manifest, self._snapshot_bytes = self._read_snapshot()
            self._snapshot_stamp = manifest.updated_at
        found = self._read_journal(self._snapshot_stamp)
        if found is None:
            header = _JournalHeader(snapshot_updated_at=self._snapshot_stamp).model_dump_json()
            write_text_atomic(self.journal_path, header + "\n")
            return len(header) + 1
        _, end = found
        if self.journal_path.stat().st_size != end:
            with self.journal_path.open("r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
        return end

    def _save(self, manifest: Manifest) -> None:
        stamp = utcnow()
        if self._snapshot_stamp is not None and stamp <= self._snapshot_stamp:
            stamp = self._snapshot_stamp + timedelta(microseconds=1)  # the clock stepped back
        manifest.updated_at = stamp
        text = manifest.model_dump_json(indent=1)
        write_text_atomic(self.path, text)
        self._snapshot_stamp, self._snapshot_bytes = stamp, len(text)
        # From here the journal on disk names an older snapshot: stale whether or not the
        # unlink below survives a crash.
        self.journal_path.unlink(missing_ok=True)
        self._journal_bytes = None


def _first_error(error: ValidationError) -> str:
    """A pydantic error in a few words: not JSON, or the first field that is wrong."""
    first = error.errors(include_url=False, include_input=False)[0]
    if first["type"] in {"json_invalid", "json_type"}:
        return f"not valid JSON: {first['msg'].removeprefix('Invalid JSON: ')}"
    where = ".".join(str(p) for p in first["loc"]) or "top level"
    more = error.error_count() - 1
    return f"{where}: {first['msg']}" + (f", and {more} more" if more else "")


def result_missing(campaign_dir: Path, entry: ManifestEntry) -> bool:
    """A done entry whose result.json is gone (deleted, a lost disk): it runs again."""
    return entry.status == "done" and not (
        entry.result_path and (campaign_dir / entry.result_path).is_file()
    )


def to_resume(
    campaign_dir: Path, manifest: Manifest, retry_failed: bool = False
) -> list[ManifestEntry]:
    """What `lem resume` runs: the manifest's pending entries (see Manifest.pending) and the
    done ones whose result.json is missing, in the manifest's order."""
    skip = ("done",) if retry_failed else ("done", *FAILED)
    return [e for e in manifest.entries if e.status not in skip or result_missing(campaign_dir, e)]


def _manifest_version(text: bytes) -> object:
    """manifest_version of a snapshot that may not validate; None if it names none."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data.get("manifest_version") if isinstance(data, dict) else None


def _identity(path: Path) -> tuple[int, int] | None:
    """What changes when a file is replaced (os.replace gives it a new inode)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns
