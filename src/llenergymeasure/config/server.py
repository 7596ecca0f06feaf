"""The `server:` section of a `mode: server` experiment (issue 15): load levels against one launch.

Strict and frozen like the rest of the config. Not yet wired into ExperimentConfig: the conductor
owns that file this wave; `ServerSpec.model_validate(section)` is the whole contract.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Level(_Strict):
    """One load level: an open loop at `rate_rps` (inf = all at once) or a closed loop."""

    rate_rps: float | None = None
    concurrency: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_kind(self) -> Level:
        if (self.rate_rps is None) == (self.concurrency is None):
            raise ValueError("a level sets exactly one of rate_rps or concurrency")
        if self.rate_rps is not None and not self.rate_rps > 0:  # also refuses nan and -inf
            raise ValueError(f"rate_rps must be > 0 or inf, got {self.rate_rps}")
        return self

    @property
    def label(self) -> str:
        return f"c{self.concurrency}" if self.concurrency is not None else f"r{self.rate_rps:g}"


class Slo(_Strict):
    ttft_p99_s: float | None = Field(default=None, gt=0)
    itl_p99_s: float | None = Field(default=None, gt=0)
    e2e_p99_s: float | None = Field(default=None, gt=0)


class ServerSpec(_Strict):
    levels: tuple[Level, ...] = Field(min_length=1)
    arrival: Literal["poisson", "gamma", "constant"] = "poisson"
    burstiness: float | None = Field(default=None, gt=0)
    """Coefficient of variation of inter-arrival times; gamma only (1.0 = Poisson)."""
    requests_per_level: int | None = Field(default=None, ge=1)
    duration_s: float | None = Field(default=None, gt=0)
    seed: int = 0
    slo: Slo = Slo()
    cooldown_s: float = Field(default=10.0, ge=0)
    startup_timeout_s: float = Field(default=600.0, gt=0)
    warmup_requests: int = Field(default=4, ge=0)
    lag_budget_s: float = Field(default=0.001, gt=0)
    """Send-lag p99 above this flags the level: the generator, not the server, was the limit."""

    @model_validator(mode="after")
    def _consistent(self) -> ServerSpec:
        if self.requests_per_level is None and self.duration_s is None:
            raise ValueError("set requests_per_level or duration_s (a level must be bounded)")
        if self.burstiness is not None and self.arrival != "gamma":
            raise ValueError(f"burstiness applies to arrival: gamma, not {self.arrival}")
        return self
