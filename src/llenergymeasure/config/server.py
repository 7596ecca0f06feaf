"""The `server:` section of a `mode: server` experiment (issue 15): load levels against one launch.

Strict and frozen like the rest of the config; ExperimentConfig holds it as `server:` beside
`mode: server`. Infinity (`rate_rps: inf`) crosses exp.json as the string "Infinity". Every
number has an upper bound a real run could need (so a typo is refused at expansion, not found
as an overflow or a worker killed at its timeout); inf only where it means something (rate_rps).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal
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
        (),
        strict=False,  # a YAML list; each level is strict itself
        description="Load levels, measured one after another on one server (a trace: none).",
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
        strict=False,  # a YAML list
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
