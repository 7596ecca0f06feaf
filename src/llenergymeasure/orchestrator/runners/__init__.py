"""Runners start one worker for one experiment cycle and report how it ended.

Every runner takes the same Job and returns the same Outcome; only files cross the boundary
(exp.json in; result.json or error.json and a log out). A runner is a context manager so that
whatever it started is gone when the campaign stops, by error or Ctrl+C included: run() is
called from worker threads (several at once with --gpus), so a Ctrl+C reaches the campaign
loop, not run(), and __exit__ must stop every job still running.

Stopping comes in two strengths. interrupt(grace_s) is the first Ctrl+C: each running worker
gets SIGTERM, which it handles like Ctrl+C (it unwinds, so its backend frees the GPU and ends
its engine processes, and writes error.json), and is killed if it has not ended within
grace_s; run() then returns as usual. __exit__ (the second Ctrl+C, or any error) kills at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol


@dataclass(frozen=True)
class Job:
    exp_path: Path
    output_dir: Path
    log_path: Path
    env: dict[str, str]
    timeout_s: float
    gpus: tuple[int, ...] | None = None
    """GPU indices (nvidia-smi order) the worker must see and use alone; None: not pinned."""
    on_submitted: Callable[[str], None] | None = field(default=None, compare=False)
    """Called with the scheduler's job id as soon as a batch runner (Slurm) has submitted
    the attempt, before it ends: the manifest records it at once, so an orchestrator killed
    while the job runs leaves a resume the id to wait for instead of submitting it again."""


@dataclass(frozen=True)
class ContainerRecord:
    """Where a docker runner ran the worker, for the manifest."""

    name: str
    id: str | None
    image_digest: str | None = None


@dataclass(frozen=True)
class Outcome:
    returncode: int | None
    """The worker's exit code (killed by signal N: -N); None if it timed out or never started."""
    timed_out: bool
    wall_s: float
    container: ContainerRecord | None = None
    container_start_s: float = 0.0
    """Seconds of wall_s spent starting a long-lived container before the worker began
    (docker-persistent, once per backend and campaign): a cost of the campaign, not of this
    experiment."""
    slurm: Any = None
    """runner slurm: a SlurmRecord (job id, node, GPUs) of the job that ran this attempt."""


NOT_STARTED = Outcome(returncode=None, timed_out=False, wall_s=0.0)
"""What run() returns when the campaign is stopping before its worker started."""


class Runner(Protocol):
    name: str
    fresh_container_per_run: bool
    """Every run starts in a new container (gaps may be skipped there, if the user opts in)."""

    def run(self, job: Job) -> Outcome: ...

    def interrupt(self, grace_s: float) -> None:
        """Ask every running worker to clean up and stop, kill it after grace_s; returns at
        once. No worker starts after this (run() returns an Outcome without starting one)."""

    def __enter__(self) -> Runner: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def gpu_env(gpus: tuple[int, ...] | None) -> dict[str, str]:
    """Pin a worker to its GPUs. PCI bus order makes CUDA's indices the ones nvidia-smi and
    NVML use, on the host and inside a container that sees every GPU."""
    if gpus is None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
