"""The `server:` section of a `mode: server` experiment (issue 15): load levels against one launch.

Strict and frozen like the rest of the config; ExperimentConfig holds it as `server:` beside
`mode: server`. Infinity (`rate_rps: inf`) crosses exp.json as the string "Infinity". Every
number has an upper bound a real run could need (so a typo is refused at expansion, not found
as an overflow or a worker killed at its timeout); inf only where it means something (rate_rps).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, ser_json_inf_nan="strings")


SERVER_BINDING_KEYS = frozenset({"host", "port", "uds", "fd"})
"""Server options that rebind it off the worker's loopback address and port."""
HOUR_S = 3600.0
DAY_S = 86_400.0


class Level(_Strict):
    """One load level: an open loop at `rate_rps` (inf = all at once) or a closed loop."""

    rate_rps: float | None = Field(
        None,
        strict=False,  # exp.json carries inf as "Infinity"; other strings are refused below
        description="Open loop: requests per second, at most 10000 (inf: all at once, the "
        "saturation point).",
    )
    concurrency: int | None = Field(
        default=None, ge=1, le=4096, description="Closed loop: this many requests always in flight."
    )

    @field_validator("rate_rps", mode="before")
    @classmethod
    def _number(cls, value: object) -> object:
        if isinstance(value, bool) or (
            isinstance(value, str) and value.lower() not in ("inf", "infinity")
        ):
            raise ValueError(f"rate_rps must be a number or inf, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Level:
        if (self.rate_rps is None) == (self.concurrency is None):
            raise ValueError("a level sets exactly one of rate_rps or concurrency")
        rate = self.rate_rps
        if rate is not None and not (0 < rate <= 10_000 or rate == float("inf")):  # nan too
            raise ValueError(f"rate_rps must be > 0 and <= 10000, or inf; got {rate}")
        return self

    @property
    def label(self) -> str:
        return f"c{self.concurrency}" if self.concurrency is not None else f"r{self.rate_rps:g}"


def _slo_s(description: str) -> Any:
    return Field(default=None, gt=0, le=HOUR_S, description=description)


class Slo(_Strict):
    ttft_p99_s: float | None = _slo_s("Time to first token a good request stays within.")
    itl_p99_s: float | None = _slo_s("Longest gap between chunks a good request stays within.")
    e2e_p99_s: float | None = _slo_s("End-to-end time a good request stays within.")


class ServerSpec(_Strict):
    levels: tuple[Level, ...] = Field(
        strict=False,  # a YAML list; each level is strict itself
        description="Load levels, measured one after another on one server launch.",
    )
    arrival: Literal["poisson", "gamma", "constant"] = Field(
        "poisson", description="Open-loop arrival process (seeded)."
    )
    burstiness: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="Coefficient of variation of inter-arrival times; gamma only (1.0 = Poisson).",
    )
    requests_per_level: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Requests sent per level (or bound it by duration_s).",
    )
    duration_s: float | None = Field(
        default=None,
        gt=0,
        le=DAY_S,
        description="Seconds per level after which nothing more is sent.",
    )
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="Arrival-process seed (level i uses seed + i)."
    )
    slo: Slo = Field(Slo(), description="Bounds a request meets to count towards goodput.")
    cooldown_s: float = Field(
        default=10.0, ge=0, le=HOUR_S, description="Idle pause between levels."
    )
    startup_timeout_s: float = Field(
        default=600.0,
        gt=0,
        le=DAY_S,
        description="The server must answer /health within this, in total (however slowly "
        "it answers).",
    )
    warmup_requests: int = Field(
        default=4,
        ge=0,
        le=10_000,
        description="Requests sent at once before the first level, unmeasured.",
    )
    request_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=HOUR_S,
        description="Each request, end to end: cut (and counted failed) after this.",
    )
    max_failed_fraction: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="A level with a larger share of failed requests is failed.",
    )
    max_lag_fraction: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="Open loop: send-lag p99 above this share of the level's mean inter-arrival "
        "time flags the level: the generator, not the server, was the limit.",
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
