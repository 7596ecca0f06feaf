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

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol, Self, runtime_checkable

from llenergymeasure.errors import DispatchError

if TYPE_CHECKING:
    from llenergymeasure.config.settings import UserSettings


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
    """Called with the scheduler's job id as soon as a batch runner has submitted
    the attempt, before it ends: the manifest records it at once, so an orchestrator killed
    while the job runs leaves a resume the id to wait for instead of submitting it again."""


@dataclass(frozen=True)
class ContainerRecord:
    """Where a docker runner ran the worker, for the manifest."""

    name: str
    id: str | None
    image_digest: str | None = None


@dataclass(frozen=True)
class JobRef:
    """The batch scheduler's job that ran an attempt, for the manifest."""

    id: str
    node: str | None = None
    gpus: int | None = None


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
    job: JobRef | None = None
    """A batch runner's job that ran this attempt."""


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


class RunnerBase:
    """The lifecycle every real runner shares (httpx's BaseTransport shape): enter, run,
    interrupt, close. A subclass says how to clear what a killed orchestrator left (open),
    how to stop what it started (on_interrupt, close), and how one job runs (run)."""

    name: str
    fresh_container_per_run = False

    def __init__(self) -> None:
        # run() is called from worker threads; interrupt and close from the campaign loop's.
        self._lock = threading.Lock()
        self._closed = False
        self.stop_at: float | None = None
        """Set by interrupt(): running workers are stopped for good at this time."""

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            self._closed = True
        self.close()

    def open(self) -> None:
        """Clear what an orchestrator killed outright left behind."""

    def close(self) -> None:
        """Kill at once whatever is still running."""

    def interrupt(self, grace_s: float) -> None:
        self.stop_at = time.monotonic() + grace_s
        self.on_interrupt(grace_s)

    def on_interrupt(self, grace_s: float) -> None:
        """Ask the running workers to clean up and stop (they are killed at stop_at)."""

    def stopping(self) -> bool:
        """True once interrupt() was called (no new worker starts); raises once closed.
        Call with the lock held where a start must not race close()."""
        if self._closed:
            raise DispatchError(f"the {self.name} runner was closed; no new worker starts")
        return self.stop_at is not None


@runtime_checkable
class AdoptingRunner(Runner, Protocol):
    """A batch runner whose jobs outlive the orchestrator: a resume waits for them
    (adopt) instead of submitting them again, and a whole campaign can be submitted at once
    (submit_array, for `lem campaign --detach`)."""

    def adopt(self, job: Job, job_id: str) -> Outcome: ...

    def submit_array(
        self,
        jobs: list[Job],
        gaps_s: list[float],
        after: str | None,
        body: Callable[..., object] | None = None,
    ) -> list[str]: ...

    def max_array_size(self) -> int: ...


DoctorRow = tuple[Literal["ok", "warn", "fail"], str, str]
"""`lem doctor`'s row: (status, detail, fix)."""


class JobQueue(Protocol):
    """What a batch scheduler says about a campaign's jobs, for a resume and `lem status`,
    without opening a runner."""

    scheduler: str
    """Its name in messages."""
    cancel: str
    """Its command that cancels a job, for messages."""

    def find(self, job: Job) -> str | None:
        """The id of the job that runs this attempt, by name; None when none is queued."""

    def state(self, job_id: str) -> str | None:
        """The scheduler's state of a job; None when it no longer knows it."""

    def live(self, state: str | None) -> bool:
        """The job has not ended: it is waited for, never submitted again."""

    def refuse_strays(self, campaign_id: str, known: set[str], unknown: list[str]) -> None:
        """Raise ConfigError when jobs of the campaign run that the manifest does not name
        while some runs have no job id (a detached submission cut short)."""

    def doctor(self, settings: UserSettings | None) -> DoctorRow:
        """`lem doctor`'s row: (status, detail, fix)."""


def gpu_env(gpus: tuple[int, ...] | None) -> dict[str, str]:
    """Pin a worker to its GPUs. PCI bus order makes CUDA's indices the ones nvidia-smi and
    NVML use, on the host and inside a container that sees every GPU."""
    if gpus is None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
