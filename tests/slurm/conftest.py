"""Slurm tests: a real one-node Slurm (scripts/provision-slurm.sh; .ci/run runs it first),
real sbatch jobs running the built-in tiny model. Skipped, with the reason, when no Slurm
answers."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_helpers import queued_jobs


@pytest.fixture(scope="session")
def slurm() -> None:
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"no Slurm answers ({e}); scripts/provision-slurm.sh sets one up")
    if out.returncode != 0 or not out.stdout.strip():
        pytest.skip(
            f"no Slurm answers ({out.stderr.strip() or 'no partition'}); "
            "scripts/provision-slurm.sh sets one up"
        )


@pytest.fixture
def campaign_root(tmp_path: Path, slurm: None) -> Iterator[Path]:
    """The CLI's working directory (no cool-down gaps on a CPU); at the end no job of this
    test is left in Slurm's queue."""
    (tmp_path / ".lem-config.yaml").write_text(
        "gaps: {between_experiments_s: 0, between_cycles_s: 0}\n", encoding="utf-8"
    )
    yield tmp_path
    left = queued_jobs(tmp_path)
    if left:
        subprocess.run(["scancel", *left], check=False, timeout=30)
    assert not left, f"jobs left in Slurm's queue: {left}"
