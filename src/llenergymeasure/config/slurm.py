"""Slurm settings for `runner: slurm`, each with the source that set it (environment variable
or default), so the manifest can say where a partition or time limit came from."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ENV_VARS: dict[str, str] = {
    "partition": "LEM_SLURM_PARTITION",
    "account": "LEM_SLURM_ACCOUNT",
    "qos": "LEM_SLURM_QOS",
    "exclusive": "LEM_SLURM_EXCLUSIVE",
    "node_runner": "LEM_SLURM_NODE_RUNNER",
    "extra_sbatch": "LEM_SLURM_EXTRA_SBATCH",
    "array_parallelism": "LEM_SLURM_ARRAY_PARALLELISM",
}


class SlurmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    partition: str | None = Field(None, description="sbatch --partition; None: the default.")
    account: str | None = None
    qos: str | None = None
    exclusive: bool = Field(True, description="Whole nodes: no neighbour's load in a reading.")
    node_runner: Literal["local"] = Field(
        "local", description="How a task starts the worker on its node."
    )
    extra_sbatch: tuple[str, ...] = Field((), description="Further sbatch flags, verbatim.")
    array_parallelism: int = Field(256, ge=1, description="Most tasks running at once.")
    sources: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlurmSettings:
        """Read LEM_SLURM_* (see ENV_VARS); a bad value raises pydantic's ValidationError."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        sources: dict[str, str] = {}
        for key, var in ENV_VARS.items():
            text = env.get(var)
            if text is None or text == "":
                sources[key] = "default"
                continue
            sources[key] = f"env {var}"
            if key == "exclusive":
                values[key] = text.strip().lower() in {"1", "true", "yes", "on"}
            elif key == "extra_sbatch":
                values[key] = tuple(shlex.split(text))
            elif key == "array_parallelism":
                values[key] = int(text)
            else:
                values[key] = text
        return cls.model_validate({**values, "sources": sources})
