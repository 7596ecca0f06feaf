"""User settings: `.lem-config.yaml`, machine-level choices that do not belong in a campaign
(default gaps, the runner). A campaign file overrides them; `--runner` overrides both.

Looked up from the working directory upwards, so a project's settings apply in its subfolders.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llenergymeasure.config.campaign import Gaps, RunnerChoice
from llenergymeasure.config.loader import explain_validation_error, read_yaml

SETTINGS_FILE = ".lem-config.yaml"


class UserSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    gaps: Gaps = Field(
        default_factory=Gaps, description="Default gaps for campaigns that do not set them."
    )
    runner: RunnerChoice | None = Field(
        None, description="Runner when neither `--runner` nor the campaign file names one."
    )


def find_settings_file(start: Path) -> Path | None:
    for directory in (start.resolve(), *start.resolve().parents):
        candidate = directory / SETTINGS_FILE
        if candidate.is_file():
            return candidate
    return None


def load_settings(start: Path | None = None) -> UserSettings:
    """The nearest `.lem-config.yaml` at or above start (default: the working directory); the
    built-in defaults when there is none. Any problem is a ConfigError."""
    path = find_settings_file(start or Path.cwd())
    if path is None:
        return UserSettings()
    doc = read_yaml(path, what="settings file")
    try:
        return UserSettings.model_validate(doc.data)
    except ValidationError as e:
        raise explain_validation_error(e, UserSettings, doc, context="in user settings") from e
