"""Host-side checks of what a campaign's experiments name, before anything runs: a model path
that is not there is a configuration error found in a second, not after a worker start per
attempt (issue 14 point 6)."""

from __future__ import annotations

from pathlib import Path

from llenergymeasure.config.energy_sources import NVML, missing_extra
from llenergymeasure.config.grid import Campaign
from llenergymeasure.config.trace import read_trace, trace_path
from llenergymeasure.errors import ConfigError
from llenergymeasure.models import is_builtin, resolve_model

_LOCAL_PREFIXES = ("/", "./", "../", "~")


def looks_local(model: str) -> bool:
    """A model named as a filesystem path (a Hugging Face id is `org/name`, never these)."""
    return model.startswith(_LOCAL_PREFIXES) or model in (".", "..")


def check_models(campaign: Campaign) -> None:
    """Each distinct model resolves: a known built-in, or a local directory holding a
    config.json. Hugging Face ids are left to the worker (the host may be offline)."""
    for model in sorted({exp.config.model for exp in campaign.experiments}):
        if is_builtin(model):
            resolve_model(model)
            continue
        if not looks_local(model):
            continue
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"model {model!r}: no such directory ({path.resolve()}); give an existing "
                "local model directory or a Hugging Face id (org/name)"
            )
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model {model!r}: {path.resolve()} has no config.json; it is not a "
                "Hugging Face model directory"
            )


def check_energy_sources(campaign: Campaign, runner: str | None) -> None:
    """With the local runner the workers run in this Python environment: an energy source
    whose optional extra is missing here is a configuration error now, not one per worker.
    (In an image or on a cluster node the worker says so itself, before loading a model.)"""
    if runner != "local":
        return
    named = {exp.config.measurement.energy_source for exp in campaign.experiments}
    for source in sorted(s for s in named if s is not None and s != NVML):
        problem = missing_extra(source)
        if problem is not None:
            raise ConfigError(problem)


def check_servers(campaign: Campaign) -> None:
    """Each `server.trace` reads as a trace and each `server.url` answers /v1/models now: a
    typo in either is found before anything runs, not after a worker start per attempt."""
    specs = [e.config.server for e in campaign.experiments if e.config.server is not None]
    for trace in sorted({s.trace for s in specs if s.trace is not None}):
        read_trace(trace_path(trace, campaign.base_dir))
    for url in sorted({s.url for s in specs if s.url is not None}):
        import httpx

        try:
            httpx.get(url + "/v1/models", timeout=5.0, trust_env=False).raise_for_status()
        except httpx.HTTPError as e:
            where = f"{campaign.source}: " if campaign.source else ""
            raise ConfigError(
                f"{where}server.url {url} does not answer GET /v1/models ({e}); start the "
                "server first, or fix the URL"
            ) from e
