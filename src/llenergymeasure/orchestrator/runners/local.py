"""Local runner: `python -m llenergymeasure.worker exp.json` in a fresh process (spawn, not
fork: no inherited CUDA context or engine state), in its own process group so that a timeout or
an interrupt can kill it and everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from types import TracebackType
from typing import IO

from llenergymeasure.orchestrator.runners import Job, Outcome


class WorkerProcess:
    """A worker process group that is killed on exit unless it already ended."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: IO[bytes]) -> None:
        self.cmd, self.env, self.log = cmd, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> subprocess.Popen[bytes]:
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self.proc

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The group may still hold children of a worker that itself exited.
        self.kill()


class LocalRunner:
    name = "local"

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def run(self, job: Job) -> Outcome:
        cmd = [sys.executable, "-m", "llenergymeasure.worker", str(job.exp_path)]
        env = {
            **os.environ,
            **job.env,
            "LEM_PARENT_PID": str(os.getpid()),
            "PYTHONUNBUFFERED": "1",
        }
        t0 = time.monotonic()
        with job.log_path.open("ab") as log:
            worker = WorkerProcess(cmd, env, log)
            with worker as proc:
                try:
                    returncode: int | None = proc.wait(timeout=job.timeout_s)
                    timed_out = False
                except subprocess.TimeoutExpired:
                    worker.kill()
                    returncode, timed_out = None, True
        return Outcome(returncode=returncode, timed_out=timed_out, wall_s=time.monotonic() - t0)
