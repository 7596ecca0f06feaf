"""The `server:` section of a `mode: server` experiment (issue 15): load levels against one launch.

Strict and frozen like the rest of the config; ExperimentConfig holds it as `server:` beside
`mode: server`. Infinity (`rate_rps: inf`) crosses exp.json as the string "Infinity".
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llenergymeasure.config.descriptor import descriptors


def server_backends() -> list[str]:
    """Backends whose own OpenAI-compatible server the worker can launch (their descriptor's
    `serves`): PyTorch through `transformers serve --continuous-batching`, vLLM through its API
    server, TensorRT-LLM through `trtllm-serve` (written to its API, not run here)."""
    return [name for name, found in descriptors().items() if found.serves]


def server_mode_refusal(backend: str) -> str | None:
    """Why `mode: server` cannot run on `backend`, naming the ones that can; None if it can."""
    if backend in server_backends():
        return None
    return (
        f"mode: server is not supported on backend '{backend}'; "
        f"backends that support it: {', '.join(server_backends())}"
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="strings")


class Level(_Strict):
    """One load level: an open loop at `rate_rps` (inf = all at once) or a closed loop."""

    rate_rps: float | None = Field(
        None, description="Open loop: requests per second (inf: all at once, the saturation point)."
    )
    concurrency: int | None = Field(
        default=None, ge=1, description="Closed loop: this many requests always in flight."
    )

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
    ttft_p99_s: float | None = Field(
        default=None, gt=0, description="Time to first token a good request stays within."
    )
    itl_p99_s: float | None = Field(
        default=None, gt=0, description="Longest gap between chunks a good request stays within."
    )
    e2e_p99_s: float | None = Field(
        default=None, gt=0, description="End-to-end time a good request stays within."
    )


class ServerSpec(_Strict):
    levels: tuple[Level, ...] = Field(
        description="Load levels, measured one after another on one server launch."
    )
    arrival: Literal["poisson", "gamma", "constant"] = Field(
        "poisson", description="Open-loop arrival process (seeded)."
    )
    burstiness: float | None = Field(
        default=None,
        gt=0,
        description="Coefficient of variation of inter-arrival times; gamma only (1.0 = Poisson).",
    )
    requests_per_level: int | None = Field(
        default=None, ge=1, description="Requests sent per level (or bound it by duration_s)."
    )
    duration_s: float | None = Field(
        default=None, gt=0, description="Seconds per level after which nothing more is sent."
    )
    seed: int = Field(0, description="Arrival-process seed (level i uses seed + i).")
    slo: Slo = Field(Slo(), description="Bounds a request meets to count towards goodput.")
    cooldown_s: float = Field(default=10.0, ge=0, description="Idle pause between levels.")
    startup_timeout_s: float = Field(
        default=600.0, gt=0, description="The server must answer /health within this."
    )
    warmup_requests: int = Field(
        default=4, ge=0, description="Requests sent at once before the first level, unmeasured."
    )
    lag_budget_s: float = Field(
        default=0.001,
        gt=0,
        description="Send-lag p99 above this flags the level: the generator, not the server, "
        "was the limit.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ServerSpec:
        if not self.levels:  # here, not min_length: a bad level then reports only itself
            raise ValueError("levels needs at least 1 level")
        if self.requests_per_level is None and self.duration_s is None:
            raise ValueError("set requests_per_level or duration_s (a level must be bounded)")
        if self.burstiness is not None and self.arrival != "gamma":
            raise ValueError(f"burstiness applies to arrival: gamma, not {self.arrival}")
        return self
