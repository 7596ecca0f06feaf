"""Shared fixtures for unit tests: writing campaign files and hand-made worker results (the
helpers themselves live in unit_results.py, importable by name beside other test folders)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from unit_results import make_result

from llenergymeasure.results.schema import (
    ExperimentResult,
)

WriteYaml = Callable[..., Path]


@pytest.fixture
def write_yaml(tmp_path: Path) -> WriteYaml:
    """write_yaml(text, name="campaign.yaml") -> path; text is dedented."""

    def write(text: str, name: str = "campaign.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def result_for() -> Callable[..., ExperimentResult]:
    """result_for(spec, **overrides) -> a valid ExperimentResult (see make_result)."""
    return make_result
