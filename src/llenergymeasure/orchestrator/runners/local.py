"""Local runner: `python -m llenergymeasure.worker exp.json` in a fresh process (spawn, not
fork: no inherited CUDA context or engine state), in its own process group so that a timeout or
an interrupt can kill it and everything it started."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import IO

from llenergymeasure.errors import DispatchError
from llenergymeasure.orchestrator.runners import NOT_STARTED, Job, Outcome, gpu_env

POLL_S = 0.1


class WorkerProcess:
    """A worker process group; kill() ends the whole group (it may hold the worker's children
    even after the worker itself exited)."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: IO[bytes]) -> None:
        self.cmd, self.env, self.log = cmd, env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.kill_at = math.inf
        """When terminate() asked it to stop: the time it is killed if still running."""

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

    def terminate(self, grace_s: float) -> None:
        """SIGTERM to the worker alone (it ends the engine processes it started itself, in
        order); the group is killed at kill_at if the worker has not ended by then."""
        if self.proc is None or self.kill_at < math.inf:
            return
        self.kill_at = time.monotonic() + grace_s
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def wait(self, timeout_s: float) -> tuple[int | None, bool]:
        """(exit code, timed out): waits for the worker, killing the group at the time limit
        or, once terminate() was called, at kill_at."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            if now >= deadline:
                self.kill()
                return None, True
            if now >= self.kill_at:
                self.kill()
                return self.proc.returncode, False
            try:
                return self.proc.wait(timeout=min(POLL_S, deadline - now)), False
            except subprocess.TimeoutExpired:
                continue


class LocalRunner:
    name = "local"
    fresh_container_per_run = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: set[WorkerProcess] = set()
        self._closed = False
        self._grace_s: float | None = None

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

    def interrupt(self, grace_s: float) -> None:
        with self._lock:
            self._grace_s = grace_s
            active = list(self._active)
        for worker in active:
            worker.terminate(grace_s)

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
        if self._grace_s is not None:
            return NOT_STARTED
        with job.log_path.open("ab") as log:
            worker = WorkerProcess(cmd, env, log)
            with self._lock:
                if self._closed:
                    raise DispatchError("the local runner was closed; no new worker starts")
                if self._grace_s is not None:
                    return NOT_STARTED
                worker.start()
                self._active.add(worker)
            try:
                returncode, timed_out = worker.wait(job.timeout_s)
            finally:
                with self._lock:
                    self._active.discard(worker)
                worker.kill()
        return Outcome(returncode=returncode, timed_out=timed_out, wall_s=time.monotonic() - t0)
