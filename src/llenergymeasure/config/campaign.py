"""A campaign: a base experiment, a grid and/or explicit experiments, and how to run them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CAMPAIGN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

RunnerChoice = Literal["auto", "local", "docker", "docker-persistent"]
"""auto: docker when the engine answers and the images exist, else local (with a notice)."""


class CampaignConfig(BaseModel):
    """The campaign file's top level. `base`, `grid` and `experiments` stay raw here: they are
    merged first and validated as ExperimentConfig per expanded experiment (see grid.py), so a
    base that is only valid together with a grid value is allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(
        pattern=CAMPAIGN_NAME_PATTERN,
        description="Campaign name: letters, digits, '.', '_' or '-' (it names a directory).",
    )
    base: dict[str, Any] = Field(
        default_factory=dict, description="Experiment settings shared by every experiment."
    )
    grid: dict[str, list[Any]] | None = Field(
        None,
        description="Parameter -> list of values; every combination becomes an experiment. "
        "`pytorch.x: [...]` sweeps x for the pytorch backend only.",
    )
    experiments: list[dict[str, Any]] | None = Field(
        None, description="Explicit experiments, each merged over `base`."
    )
    cycles: int = Field(1, ge=1, le=1000, description="Repetitions of the whole experiment set.")
    output_dir: str = Field(
        "results", min_length=1, description="Results root; relative to the working directory."
    )
    runner: RunnerChoice | None = Field(
        None,
        description="local: a fresh `lem-worker` subprocess per experiment; docker: a fresh "
        "container per experiment; docker-persistent: one container per backend, `exec` per "
        "experiment; auto (default): docker when usable, else local. `--runner` overrides it, "
        "and it overrides `.lem-config.yaml`.",
    )
    cold_start: bool = Field(
        False,
        description="Every experiment in a fresh worker: docker-persistent runs as docker.",
    )
    timeout_s: float = Field(
        3600.0, gt=0, le=7 * 24 * 3600, description="Per-experiment limit; the worker is killed."
    )

    @field_validator("grid")
    @classmethod
    def _grid_dimensions_not_empty(cls, grid: dict[str, list[Any]] | None) -> Any:
        if grid is None:
            return grid
        if not grid:
            raise ValueError("grid is empty: add a parameter with a list of values, or remove it")
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid parameter '{key}' has an empty list of values")
            if not key or any(not part for part in key.split(".")):
                raise ValueError(f"grid key '{key}' is not a dotted parameter name")
        return grid

    @model_validator(mode="after")
    def _experiments_not_empty(self) -> CampaignConfig:
        if self.experiments is not None and not self.experiments:
            raise ValueError("`experiments:` is an empty list: add experiments or remove it")
        return self
