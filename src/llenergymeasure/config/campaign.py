"""A campaign: a base experiment, a grid and/or explicit experiments, and how to run them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llenergymeasure.config.choices import Order, RunnerChoice
from llenergymeasure.config.experiment import parameter_names

CAMPAIGN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

DAY_S = 24 * 3600
SECRET_SECTIONS = ("slurm",)
"""Campaign-file sections whose values may hold secrets (a runner's environment and flags):
never echoed in an error, redacted in the campaign's copy of its file."""
DEFAULT_CYCLES = 3
"""Cycles of a campaign whose file sets none, from the CLI and the library alike: enough for
a spread and a confidence interval. A single experiment (`lem run`, run_experiment) runs once."""


NodeRunner = Literal["local", "docker"]


class SlurmSettings(BaseModel):
    """Settings for `runner: slurm`. They come, per key, from the campaign file's `slurm:`
    section > LEM_SLURM_* environment variables > `.lem-config.yaml`'s `slurm:` > these
    defaults (config.settings resolves them and records each key's source as `slurm.<key>`)."""

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


class Gaps(BaseModel):
    """Idle time before an experiment starts, so the previous one's heat does not bias it.
    Unset keys in a campaign file come from `.lem-config.yaml`, then from these defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    between_experiments_s: float = Field(
        5.0, ge=0, le=DAY_S, description="Wait between two consecutive experiments."
    )
    between_cycles_s: float = Field(
        30.0,
        ge=0,
        le=DAY_S,
        description="Wait where a cycle ends (interleaved/shuffled: after each pass over the "
        "set; grouped: between repeats of one experiment).",
    )
    skip_in_fresh_containers: bool = Field(
        False,
        description="Wait no gap where the runner starts every experiment in a fresh "
        "container. Opt-in: a new container does not cool the GPU by itself.",
    )

    def over(self, defaults: Gaps) -> Gaps:
        """These gaps where they were set explicitly, `defaults` elsewhere."""
        return defaults.model_copy(update={k: getattr(self, k) for k in self.model_fields_set})


class StatisticsConfig(BaseModel):
    """How results are aggregated across cycles (summary.csv, `lem results`, reports)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    group_by: list[str] | None = Field(
        None,
        min_length=1,
        description="Config parameters to group by (e.g. [backend, batch_size]); runs that "
        "differ only in other parameters are pooled. null: one group per experiment.",
    )
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Confidence level of the CIs.")

    @field_validator("group_by")
    @classmethod
    def _known_parameters(cls, keys: list[str] | None) -> list[str] | None:
        if keys is None:
            return keys
        known = parameter_names()
        for key in keys:
            if key not in known:
                raise ValueError(
                    f"group_by key '{key}' is not an experiment parameter; known: "
                    f"{', '.join(sorted(known))}"
                )
        if len(set(keys)) != len(keys):
            raise ValueError("group_by lists a parameter twice")
        return keys


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
    cycles: int | None = Field(
        None,
        ge=1,
        le=1000,
        description=f"Repetitions of the whole experiment set; unset: {DEFAULT_CYCLES}.",
    )
    order: Order = Field(
        "interleaved",
        description="interleaved: A B C, A B C; shuffled: each cycle in a new random order "
        "drawn from order_seed; grouped: A A A, B B B.",
    )
    order_seed: int | None = Field(
        None,
        ge=0,
        le=2**32 - 1,
        description="Seed of the shuffled order; unset: drawn at random and recorded.",
    )
    gaps: Gaps | None = Field(None, description="Cool-down waits; unset keys: user settings.")
    thermal_floor_c: float | None = Field(
        None,
        gt=0,
        lt=120,
        description="Before each experiment, wait until its GPUs are at or below this "
        "temperature (needs NVML on the host).",
    )
    thermal_floor_max_wait_s: float = Field(
        600.0,
        gt=0,
        le=DAY_S,
        description="Longest wait for thermal_floor_c; then the experiment starts with a warning.",
    )
    statistics: StatisticsConfig = Field(
        default_factory=StatisticsConfig, description="Aggregation across cycles."
    )
    output_dir: str = Field(
        "results",
        min_length=1,
        description="Results root: in a campaign file, a folder under the working directory "
        "(relative, no '..'); unset: results_dir of the user settings.",
    )
    slurm: SlurmSettings | None = Field(
        None,
        description="runner slurm: partition, account, qos, exclusive, time_min, node_runner, "
        "extra_sbatch, environment, array_parallelism; the keys set here override the "
        "environment and `.lem-config.yaml`.",
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
    skip_invalid: bool = Field(
        False,
        description="Leave out grid combinations a backend does not support (each is listed in "
        "the output and the manifest) instead of failing.",
    )
    timeout_s: float = Field(
        3600.0, gt=0, le=7 * 24 * 3600, description="Per-experiment limit; the worker is killed."
    )
    retries: int = Field(
        0,
        ge=0,
        le=100,
        description="Extra attempts for an experiment that fails (crash, timeout, backend or "
        "measurement error), each attempt's reason kept in the manifest. A configuration "
        "error or running out of memory is not retried: it recurs with the same config. "
        "`--retries` overrides it.",
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

    @model_validator(mode="after")
    def _settings_that_need_another(self) -> CampaignConfig:
        if self.order_seed is not None and self.order != "shuffled":
            raise ValueError(f"order_seed only applies to `order: shuffled`, not '{self.order}'")
        default_wait = type(self).model_fields["thermal_floor_max_wait_s"].default
        if self.thermal_floor_max_wait_s != default_wait and self.thermal_floor_c is None:
            raise ValueError("thermal_floor_max_wait_s only applies with thermal_floor_c")
        return self


class SettingsRecord(BaseModel):
    """The user settings a campaign was created with (CLI flags, environment,
    `.lem-config.yaml`), minus secrets: webhook URLs appear only as their hosts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    results_dir: str
    runner: RunnerChoice | None
    max_experiments: int
    carbon_intensity_g_per_kwh: float | None
    pue: float | None
    gpus: list[int] | None = Field(
        None, description="GPU indices the campaign runs on (--gpus); null: not pinned."
    )
    webhook_hosts: list[str] = Field(description="scheme://host of each webhook; no paths.")
    slurm: SlurmSettings | None = Field(None, description="runner slurm: the settings it used.")
    sources: dict[str, str] = Field(
        description="Where each setting that is not a default came from."
    )


class Execution(BaseModel):
    """The effective way a campaign runs, after the campaign file, `.lem-config.yaml`, CLI
    flags and defaults are resolved: recorded in the manifest so results say how they were
    taken, and so `lem resume` continues the same way."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order: Order
    order_seed: int | None
    gaps: Gaps
    thermal_floor_c: float | None
    thermal_floor_max_wait_s: float
    statistics: StatisticsConfig
    settings: SettingsRecord | None = Field(
        None,
        description="The user settings it ran with; null in campaigns made before settings "
        "were recorded.",
    )

    @field_validator("statistics", mode="before")
    @classmethod
    def _before_issue_26(cls, value: Any) -> Any:
        """Manifests recorded before intervals became Student t name the bootstrap's settings,
        which nothing reads any more: dropped, so those campaigns still load."""
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k not in ("bootstrap_resamples", "seed")}
        return value
