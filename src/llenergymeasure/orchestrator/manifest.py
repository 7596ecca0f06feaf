"""manifest.json: the campaign's state, one entry per experiment and cycle.

It is rewritten atomically on every change, so a crash at any moment leaves either the old or
the new state. The result file stays the ground truth: an entry that is not `done` but whose
result.json is complete is recovered as done instead of being run again.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config.campaign import Execution, RunnerChoice
from llenergymeasure.errors import ConfigError

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = "2"

Status = Literal["pending", "running", "done", "failed"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    experiment_id: str
    cycle: int
    backend: str
    label: dict[str, Any] = Field(default_factory=dict)
    runner: str = Field(description="The runner that ran it (before that: the one asked for).")
    container_name: str | None = Field(None, description="Docker runners: where it ran.")
    container_id: str | None = None
    image_digest: str | None = Field(None, description="Docker runners: the image's id.")
    status: Status = "pending"
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exp_path: str = Field(description="exp.json, relative to the campaign directory.")
    result_path: str | None = Field(None, description="result.json once done, relative.")
    error: str | None = Field(None, description="One-line cause of the last failure.")
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
    execution: Execution = Field(description="Effective order, gaps, thermal floor, statistics.")
    runner_choice: RunnerChoice | None = Field(
        None, description="The campaign file's `runner:`; `lem resume` honours it too."
    )
    cold_start: bool = False
    entries: list[ManifestEntry]

    def pending(self) -> list[ManifestEntry]:
        """What `lem resume` runs: everything not done (a `running` entry means a crash)."""
        return [e for e in self.entries if e.status != "done"]

    def counts(self) -> dict[str, int]:
        out = {"pending": 0, "running": 0, "done": 0, "failed": 0}
        for e in self.entries:
            out[e.status] += 1
        return out


class ManifestStore:
    """Owns the manifest file of one campaign directory."""

    def __init__(self, campaign_dir: Path) -> None:
        self.campaign_dir = campaign_dir
        self.path = campaign_dir / MANIFEST_FILE

    def load(self) -> Manifest:
        try:
            text = self.path.read_bytes()
            data = json.loads(text)
        except FileNotFoundError as e:
            raise ConfigError(
                f"{self.campaign_dir} is not a campaign directory (no {MANIFEST_FILE})"
            ) from e
        except (OSError, ValueError) as e:
            raise ConfigError(f"{self.path} is unreadable or not a manifest: {e}") from e
        version = data.get("manifest_version") if isinstance(data, dict) else None
        if version is not None and version != MANIFEST_VERSION:
            raise ConfigError(
                f"{self.path} has manifest version {version}; this llenergymeasure reads "
                f"version {MANIFEST_VERSION}: use the version that created the campaign"
            )
        try:
            return Manifest.model_validate(data)
        except ValidationError as e:
            raise ConfigError(f"{self.path} is unreadable or not a manifest: {e}") from e

    def save(self, manifest: Manifest) -> None:
        manifest.updated_at = utcnow()
        write_text_atomic(self.path, manifest.model_dump_json(indent=1))
