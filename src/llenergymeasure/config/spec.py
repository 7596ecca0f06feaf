"""exp.json: the one file that crosses into a worker (a subprocess or a container)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from llenergymeasure.config.experiment import ExperimentConfig


class ExperimentSpec(BaseModel):
    """What a worker needs to run one experiment cycle and where to put the result."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_fingerprint: str = Field(description="Host's contract fingerprint; worker must match.")
    experiment_id: str
    campaign_id: str
    campaign_name: str
    cycle: int = Field(ge=1)
    total_cycles: int = Field(ge=1)
    attempt: int = Field(ge=1)
    output_dir: str = Field(description="Absolute directory for result.json / error.json.")
    base_dir: str = Field(description="Directory of the campaign file; relative paths start here.")
    cache_dir: str = Field(description="Campaign-wide cache shared by workers (idle baseline).")
    config: ExperimentConfig
    time_limit_s: float | None = Field(
        None, gt=0, description="Per-experiment limit; the worker stops repeating passes before it."
    )
