"""Slurm settings for `runner: slurm`. They come, per key, from the campaign file's `slurm:`
section > LEM_SLURM_* environment variables > `.lem-config.yaml`'s `slurm:` > these defaults
(config.settings resolves them with the other settings and records each key's source in the
manifest as `slurm.<key>`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

NodeRunner = Literal["local", "docker"]


class SlurmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    partition: str | None = Field(None, description="sbatch --partition; null: the default.")
    account: str | None = Field(None, description="sbatch --account.")
    qos: str | None = Field(None, description="sbatch --qos.")
    exclusive: bool = Field(
        True,
        description="sbatch --exclusive: whole nodes, so no neighbour's load enters a reading.",
    )
    time_min: int | None = Field(
        None,
        ge=1,
        le=10**6,
        description="sbatch --time per run in minutes; null: the run's timeout_s plus a minute.",
    )
    node_runner: NodeRunner = Field(
        "local",
        description="How a task starts the worker on its node: local (a subprocess) or docker "
        "(the docker runner, the backend's image on that node).",
    )
    extra_sbatch: list[str] = Field(
        default_factory=list, description="Further long sbatch flags (--name=value), verbatim."
    )
    environment: dict[str, str] = Field(
        default_factory=dict, description="Variables set for the worker in every task."
    )
    array_parallelism: int = Field(
        256,
        ge=1,
        le=10**6,
        description="Most tasks of one job array running at once (--array=...%N).",
    )

    def over(self, base: SlurmSettings) -> SlurmSettings:
        """The keys set here over base (a campaign file's section over the user settings)."""
        return base.model_copy(update={k: getattr(self, k) for k in self.model_fields_set})
