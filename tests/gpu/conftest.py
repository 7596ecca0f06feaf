"""GPU tests need an NVIDIA GPU with NVML and CUDA torch; everywhere else they skip, saying so."""

from __future__ import annotations

import pytest

from llenergymeasure.measure.nvml import nvml_available


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if nvml_available() and _cuda():
        return
    skip = pytest.mark.skip(reason="no NVIDIA GPU with NVML and CUDA torch on this machine")
    for item in items:
        if "tests/gpu/" in str(item.fspath):
            item.add_marker(skip)
