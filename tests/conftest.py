"""What every test run starts from, whatever the machine it runs on: no LEM_* variable from the
caller's shell (a user's `LEM_RUNNER=docker` or `LEM_OUTPUT_DIR` would otherwise change what the
tests run, in-process and in every `lem` they start), and no `.lem-config.yaml` above the
temporary directories the tests run `lem` in (lem reads the nearest one at or above its
working directory)."""

from __future__ import annotations

import os

import pytest

from llenergymeasure.config.settings import SETTINGS_FILE, find_settings_file

for _name in [name for name in os.environ if name.startswith("LEM_")]:
    del os.environ[_name]


@pytest.fixture(scope="session", autouse=True)
def _own_gpu_locks(tmp_path_factory: pytest.TempPathFactory) -> None:
    """This session's campaigns lock devices in a directory of their own: the host-wide
    default would make test runs of two checkouts (or a user's campaign) wait for each
    other. Tests of the locks themselves set their own directory."""
    os.environ["LEM_GPU_LOCK_DIR"] = str(tmp_path_factory.mktemp("gpu-locks"))


@pytest.fixture(scope="session", autouse=True)
def _no_settings_file_above_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    stray = find_settings_file(tmp_path_factory.getbasetemp().parent)
    if stray is not None:
        pytest.exit(
            f"{stray} would be read by every `lem` these tests start in {stray.parent}: "
            f"move it away or run pytest with --basetemp=<a directory with no {SETTINGS_FILE} "
            "above it>",
            returncode=2,
        )
