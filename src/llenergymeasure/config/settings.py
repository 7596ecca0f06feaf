"""User settings: `.lem-config.yaml` in the working directory, for what belongs to a machine or
a person rather than to an experiment (today: default gaps). A campaign file overrides them."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llenergymeasure.config.campaign import Gaps
from llenergymeasure.config.loader import explain_validation_error, read_yaml

SETTINGS_FILE = ".lem-config.yaml"


class UserSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    gaps: Gaps = Field(
        default_factory=Gaps, description="Default gaps for campaigns that do not set them."
    )


def load_settings(directory: Path | None = None) -> UserSettings:
    """Settings from `<directory>/.lem-config.yaml` (default: the working directory); the
    built-in defaults when there is no such file. Any problem is a ConfigError."""
    path = (directory or Path.cwd()) / SETTINGS_FILE
    if not path.exists():
        return UserSettings()
    doc = read_yaml(path, what="settings file")
    try:
        return UserSettings.model_validate(doc.data)
    except ValidationError as e:
        raise explain_validation_error(e, UserSettings, doc, context="in user settings") from e
