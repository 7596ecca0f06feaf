"""Helpers for the Slurm tests (a module of its own: conftest is not importable by name)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def queued_jobs(folder: Path) -> list[str]:
    """Ids of jobs still queued or running whose submitit folder is under folder."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i %o"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    return [line.split()[0] for line in out.splitlines() if str(folder) in line]
