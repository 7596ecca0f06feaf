"""Local runner: `python -m llenergymeasure.worker exp.json` in a fresh process (spawn, not
fork: no inherited CUDA context or engine state), in its own process group so that a timeout or
an interrupt can kill it and everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import IO

from llenergymeasure.errors import DispatchError
from llenergymeasure.orchestrator.runners import Job, Outcome, gpu_env


class WorkerProcess:
    """A worker process group; kill() ends the whole group (it may hold the worker's children
    even after the worker itself exited)."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: IO[bytes]) -> None:
        self.cmd, self.env, self.log = cmd, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
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


class LocalRunner:
    name = "local"
    fresh_container_per_run = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: set[WorkerProcess] = set()
        self._closed = False

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._closed = True
            active = list(self._active)
        for worker in active:
            worker.kill()

    def run(self, job: Job) -> Outcome:
        cmd = [sys.executable, "-m", "llenergymeasure.worker", str(job.exp_path)]
        env = {
            **os.environ,
            **job.env,
            "LEM_PARENT_PID": str(os.getpid()),
            "PYTHONUNBUFFERED": "1",
        }
        env |= gpu_env(job.gpus)
        t0 = time.monotonic()
        with job.log_path.open("ab") as log:
            worker = WorkerProcess(cmd, env, log)
            with self._lock:
                if self._closed:
                    raise DispatchError("the local runner was closed; no new worker starts")
                proc = worker.start()
                self._active.add(worker)
            try:
                try:
                    returncode: int | None = proc.wait(timeout=job.timeout_s)
                    timed_out = False
                except subprocess.TimeoutExpired:
                    worker.kill()
                    returncode, timed_out = None, True
            finally:
                with self._lock:
                    self._active.discard(worker)
                worker.kill()
        return Outcome(returncode=returncode, timed_out=timed_out, wall_s=time.monotonic() - t0)
