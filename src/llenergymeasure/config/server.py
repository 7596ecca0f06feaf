"""The `server:` section of a `mode: server` experiment (issue 15): load levels against one launch.

Strict and frozen like the rest of the config; ExperimentConfig holds it as `server:` beside
`mode: server`. Infinity (`rate_rps: inf`) crosses exp.json as the string "Infinity".
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llenergymeasure.config.backends import OMIT_IF_NULL
from llenergymeasure.config.descriptor import descriptors

TRACE_LEVEL = "trace"
"""The label of a trace's level in results (its `level` column)."""


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


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost`: the only hosts a campaign reaches without allow_remote."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerSpec(_Strict):
    levels: tuple[Level, ...] = Field(
        (), description="Load levels, measured one after another on one server (a trace: none)."
    )
    allow_remote: bool = Field(
        False, description="Let server.url name a host outside 127.0.0.0/8 and ::1."
    )
    url: str | None = Field(
        None,
        description="An OpenAI-compatible server already running (http://127.0.0.1:PORT): lem "
        "launches nothing and never stops it. null: lem launches the backend's own server.",
        json_schema_extra=OMIT_IF_NULL,
    )
    gpus: tuple[Annotated[int, Field(ge=0, le=1023)], ...] | None = Field(
        None,
        min_length=1,
        description="CUDA device numbers of server.url's GPUs, whose whole energy is counted "
        "(null: every visible GPU).",
        json_schema_extra=OMIT_IF_NULL,
    )
    trace: str | None = Field(
        None,
        description="JSONL request trace replayed as a level of its own (`t_s`, `input_tokens` "
        "or `prompt`, `output_tokens` a line); relative to the campaign file.",
        json_schema_extra=OMIT_IF_NULL,
    )
    trace_speed: float = Field(
        1.0, gt=0, le=1000, description="Trace time scale: 2 sends the trace twice as fast."
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

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is None:
            return url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected http(s)://HOST:PORT, got {url!r}")
        if not info.data.get("allow_remote") and not is_loopback(parts.hostname):
            raise ValueError(
                f"host {parts.hostname!r} is not loopback (127.0.0.0/8, ::1); set "
                "server.allow_remote: true to measure a server elsewhere"
            )
        return url.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> ServerSpec:
        if self.gpus is not None and self.url is None:
            raise ValueError("server.gpus applies to server.url (a launched server's are ours)")
        if not self.levels and self.trace is None:  # not min_length: a bad level reports itself
            raise ValueError("levels needs at least 1 level (or set server.trace)")
        if self.levels and self.requests_per_level is None and self.duration_s is None:
            raise ValueError("set requests_per_level or duration_s (a level must be bounded)")
        if self.burstiness is not None and self.arrival != "gamma":
            raise ValueError(f"burstiness applies to arrival: gamma, not {self.arrival}")
        return self
