"""Inference engines behind one small interface (base.py), one module each.

Which module and class run a backend is its descriptor's `engine` (config/descriptor.py); the
worker imports just the one it runs, and a missing engine becomes a BackendError saying what
to install.
"""

from __future__ import annotations

import importlib

from llenergymeasure.backends.base import Backend
from llenergymeasure.config.descriptor import descriptor
from llenergymeasure.errors import BackendError, ConfigError


def get_backend(name: str) -> type[Backend]:
    """Import and return the engine class of the backend registered under name."""
    try:
        found = descriptor(name)
    except ConfigError as e:
        raise BackendError(str(e)) from e
    module_name, _, class_name = found.engine.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BackendError(
            f"backend '{name}' needs a library that is not installed ({e.name or e}); "
            f"install it with: {found.install}"
        ) from e
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendError(f"backend '{name}': {found.engine} is not a Backend class")
    return cls


__all__ = ["Backend", "get_backend"]
