"""Inference engines behind one small interface (base.py), one module each.

Which module and class run a backend is its descriptor's `engine` (config/descriptor.py); the
worker imports just the one it runs, and a missing engine becomes a BackendError saying what
to install.
"""

from __future__ import annotations

import importlib

from llenergymeasure.backends.base import Backend, Server
from llenergymeasure.config.descriptor import BackendDescriptor, descriptor
from llenergymeasure.config.server import server_mode_refusal
from llenergymeasure.errors import BackendError, ConfigError


def get_backend(name: str) -> type[Backend]:
    """Import and return the engine class of the backend registered under name."""
    found = _descriptor(name)
    cls = _import(name, found.engine, found.install)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendError(f"backend '{name}': {found.engine} is not a Backend class")
    return cls


def get_server(name: str) -> Server:
    """The server adapter of the backend registered under name (mode: server)."""
    found = _descriptor(name)
    if not found.server:
        raise BackendError(server_mode_refusal(name) or f"backend '{name}' has no server")
    cls = _import(name, found.server, found.install)
    if not (isinstance(cls, type) and issubclass(cls, Server)):
        raise BackendError(f"backend '{name}': {found.server} is not a Server class")
    return cls()


def _descriptor(name: str) -> BackendDescriptor:
    try:
        return descriptor(name)
    except ConfigError as e:
        raise BackendError(str(e)) from e


def _import(name: str, target: str, install: str) -> object:
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BackendError(
            f"backend '{name}' needs a library that is not installed ({e.name or e}); "
            f"install it with: {install}"
        ) from e
    return getattr(module, class_name, None)


__all__ = ["Backend", "Server", "get_backend", "get_server"]
