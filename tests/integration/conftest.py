"""Integration tests: real tiny-model inference through the real `lem` CLI and `lem-worker`s."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lem_cli import NO_GAPS_SETTINGS, wait_until_no_process_mentions, write


@pytest.fixture(autouse=True)
def _cpu_test_settings(tmp_path: Path) -> None:
    """Tests run the CLI in tmp_path, so its user settings (found from the working directory
    upwards) apply: no cool-down gaps, which only matter for a GPU's temperature (tests that
    check gaps set them in the campaign file), and the local runner, since these tests watch
    local worker processes whatever images this machine has."""
    write(tmp_path / ".lem-config.yaml", NO_GAPS_SETTINGS + "runner: local\n")


@pytest.fixture(autouse=True)
def _no_worker_left_behind(tmp_path: Path) -> Iterator[None]:
    """Every test: no process may still be running on files under this test's directory."""
    yield
    alive = wait_until_no_process_mentions(tmp_path, within_s=10.0)
    assert not alive, f"processes left running on {tmp_path}: {alive}"
