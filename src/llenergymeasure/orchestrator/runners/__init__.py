"""Runners start one worker for one experiment cycle and report how it ended.

Every runner takes the same Job and returns the same Outcome; only files cross the boundary
(exp.json in; result.json or error.json and a log out). A runner is a context manager so that
whatever it started is gone when the campaign stops, by error or Ctrl+C included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol


@dataclass(frozen=True)
class Job:
    exp_path: Path
    output_dir: Path
    log_path: Path
    env: dict[str, str]
    timeout_s: float


@dataclass(frozen=True)
class ContainerRecord:
    """Where a docker runner ran the worker, for the manifest."""

    name: str
    id: str | None
    image_digest: str | None = None


@dataclass(frozen=True)
class Outcome:
    returncode: int | None
    timed_out: bool
    wall_s: float
    container: ContainerRecord | None = None


class Runner(Protocol):
    name: str

    def run(self, job: Job) -> Outcome: ...

    def __enter__(self) -> Runner: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
