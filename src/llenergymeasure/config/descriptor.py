"""What the host knows about a backend, in one object per backend, and the registry of them.

Config validation (the backend's settings section and the values it supports), grid expansion,
`lem config list`, `lem doctor`, the environment record, the runners (image, fork server) and
`lem-worker` (which engine class to import) all read a backend's descriptor; nothing else names
a backend. Adding a backend means: an engine module (a `backends.base.Backend`), a descriptor,
and a compose service.

The built-in descriptors live in config/backends.py next to their settings models. Others are
registered without touching this package, as `module:ATTRIBUTE` of a BackendDescriptor:
- an entry point in the group `llenergymeasure.backends` (named after the backend), or
- LEM_BACKENDS, comma-separated (read by the host and, inherited, by its local workers).
Registering happens once per process, when the registry is first read (experiment configs are
built from it at import): set LEM_BACKENDS before starting `lem`.

Nothing here imports an engine: a descriptor names its engine class as `module:Class`, which
only `backends.get_backend` imports, in the worker.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from llenergymeasure.config.capabilities import Capabilities
from llenergymeasure.errors import ConfigError

BACKENDS_ENV = "LEM_BACKENDS"
ENTRY_POINT_GROUP = "llenergymeasure.backends"
DEFAULT_BACKEND = "pytorch"
"""The backend of an experiment that names none."""


class BackendSettings(BaseModel):
    """Base of every backend's settings section (`<backend>:` in an experiment): strict and
    frozen like the rest of the config. A null setting is left to the engine's default."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    def gpus_required(self) -> int:
        """GPUs one run occupies, for the scheduler (tensor x pipeline parallel size)."""
        return 1


@dataclass(frozen=True)
class BackendDescriptor:
    """Everything the host needs to know about one backend."""

    name: str
    """What `backend:` says, the section's key, the experiment id's prefix."""
    settings: type[BackendSettings]
    """Its settings section's model."""
    capabilities: Capabilities
    """Values of the shared parameters it supports."""
    engine: str
    """`module:Class` of its `backends.base.Backend`, imported only by the worker."""
    extra: str
    """pip extra that installs its engine: llenergymeasure[extra]."""
    import_check: str
    """Module whose presence says the engine is installed here."""
    distributions: tuple[str, ...]
    """Distributions whose versions the environment record and `lem doctor` report."""
    service: str | None
    """compose.yaml service (one image) that runs it; None: no image, local runner only."""
    label: str = ""
    """The engine's name as people write it (`TensorRT-LLM`); empty: the name."""
    install_hint: str = ""
    """What to run when the engine is missing; empty: pip install of its extra."""
    gpu_only: bool = False
    """Runs only on an NVIDIA GPU (no CPU image is built for it)."""
    cpu_extra: str = ""
    """pip extra of its CPU image (compose.cpu.yaml's ENGINE_EXTRA); empty: `extra`."""
    server: str = ""
    """`module:Class` of its `backends.base.Server` (its engine's own OpenAI-compatible
    server, for `mode: server`), imported only by the worker; empty: no server mode."""
    forkable: bool = False
    """Its engine may be imported once by the local runner's fork server and forked: it
    starts no threads, processes or CUDA at import."""

    @property
    def serves(self) -> bool:
        """`mode: server` runs on it."""
        return bool(self.server)

    @property
    def install(self) -> str:
        return self.install_hint or f"pip install 'llenergymeasure[{self.extra}]'"

    @property
    def section_description(self) -> str:
        return f"{self.label or self.name} backend settings (backend: {self.name})."


def load_object(target: str, where: str) -> object:
    """Import `module:attribute`; where: what named it, for the message."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"{where}: '{target}' is not of the form module:attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{where}: cannot import {module_name} ({e})") from e
    try:
        return getattr(module, attribute)
    except AttributeError as e:
        raise ConfigError(f"{where}: {module_name} has no attribute {attribute!r}") from e


@functools.cache
def descriptors() -> dict[str, BackendDescriptor]:
    """Every registered backend by name: the built-ins, then entry points, then LEM_BACKENDS."""
    from llenergymeasure.config.backends import BUILTIN_BACKENDS

    found: dict[str, BackendDescriptor] = {}
    plugins: list[tuple[str, str | None, str]] = [
        (f"entry point {ep.name} ({ENTRY_POINT_GROUP})", ep.name, ep.value)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    ]
    plugins += [
        (BACKENDS_ENV, None, t.strip())
        for t in os.environ.get(BACKENDS_ENV, "").split(",")
        if t.strip()
    ]
    for descriptor in BUILTIN_BACKENDS:
        found[descriptor.name] = descriptor
    for origin, name, target in plugins:
        loaded = load_object(target, origin)
        if not isinstance(loaded, BackendDescriptor):
            raise ConfigError(f"{origin}: {target} is not a BackendDescriptor")
        descriptor = loaded
        if name is not None and name != descriptor.name:
            raise ConfigError(f"{origin}: {target} describes backend '{descriptor.name}'")
        if descriptor.name in found:
            raise ConfigError(f"{origin}: backend '{descriptor.name}' is already registered")
        found[descriptor.name] = descriptor
    return found


def backend_names() -> tuple[str, ...]:
    return tuple(descriptors())


def descriptor(name: str) -> BackendDescriptor:
    """The descriptor of `name`; a ConfigError naming the known ones otherwise."""
    found = descriptors().get(name)
    if found is None:
        raise ConfigError(
            f"unknown backend '{name}'; expected one of: {', '.join(backend_names())}"
        )
    return found


def services(*, cpu_only: bool = False) -> list[str]:
    """The compose services of the registered backends (those with an image); cpu_only: only
    those whose engine runs without an NVIDIA GPU."""
    return [
        d.service
        for d in descriptors().values()
        if d.service is not None and not (cpu_only and d.gpu_only)
    ]


def cpu_extra(service: str) -> str | None:
    """The pip extra of a service's CPU image; None when no CPU image is built for it."""
    for d in descriptors().values():
        if d.service == service and not d.gpu_only:
            return d.cpu_extra or d.extra
    return None


if __name__ == "__main__":
    # `make images`: `python -m llenergymeasure.config.descriptor [--cpu]` lists services;
    # scripts/build-images-local.sh: `... --cpu-extra SERVICE` prints its CPU image's extra.
    import sys

    if sys.argv[1:2] == ["--cpu-extra"]:
        extra = cpu_extra(sys.argv[2])
        if extra is None:
            cpu = " ".join(services(cpu_only=True))
            sys.exit(f"no CPU image for {sys.argv[2]!r} (CPU services: {cpu})")
        print(extra)
    else:
        print(" ".join(services(cpu_only="--cpu" in sys.argv[1:])))
