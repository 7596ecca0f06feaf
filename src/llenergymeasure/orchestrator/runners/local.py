"""Local runner: each experiment in a fresh process with no CUDA context or engine state
inherited, in its own process group so that a timeout or an interrupt can kill it and
everything it started.

The process is forked from a fork server (multiprocessing's forkserver, started once per
runner, which imported the PyTorch engine before any CUDA use): the engine's imports (6-13 s
per run on an H200 host) are paid once per campaign, while each worker still creates its own
CUDA context. Where a fork is not safe the worker is a plain `python -m llenergymeasure.worker
exp.json` instead, and its result says why (worker_start): engines other than PyTorch (vLLM and
TensorRT-LLM start threads, processes or CUDA at import), or a job environment that the
preloaded libraries would have read at import. A worker forked from a server whose preloading
initialised CUDA after all restarts in place as that plain worker (worker/forked.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import IO

from llenergymeasure.config.descriptor import descriptors
from llenergymeasure.contract import (
    HOST_PID_ENV,
    LAUNCH_ENV,
    PRELOAD,
    WORKER_NAME,
    WORKER_START_ENV,
    fork_target,
)
from llenergymeasure.orchestrator.runners import NOT_STARTED, Job, Outcome, RunnerBase, gpu_env

POLL_S = 0.1


class WorkerProcess:
    """A worker process group; kill() ends the whole group (it may hold the worker's children
    even after the worker itself exited). Subclasses say how it starts and how it is reaped."""

    kill_at = math.inf
    """When terminate() asked it to stop: the time it is killed if still running."""

    def start(self) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        raise NotImplementedError

    def _join(self, timeout_s: float) -> int | None:
        """The exit code once it has ended within timeout_s, else None."""
        raise NotImplementedError

    def terminate(self, grace_s: float) -> None:
        """SIGTERM to the worker alone (it ends the engine processes it started itself, in
        order); the group is killed at kill_at if the worker has not ended by then."""
        if self.pid is None or self.kill_at < math.inf:
            return
        self.kill_at = time.monotonic() + grace_s
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):  # forked, not yet in its own group
            os.kill(self.pid, signal.SIGKILL)
        self._join(math.inf)

    def wait(self, timeout_s: float) -> tuple[int | None, bool]:
        """(exit code, timed out): waits for the worker, killing the group at the time limit
        or, once terminate() was called, at kill_at."""
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            if now >= deadline:
                self.kill()
                return None, True
            if now >= self.kill_at:
                self.kill()
                return self._join(0), False
            code = self._join(min(POLL_S, deadline - now))
            if code is not None:
                return code, False


class SpawnedWorker(WorkerProcess):
    """`python -m llenergymeasure.worker exp.json`: a fresh interpreter."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: IO[bytes]) -> None:
        self.cmd, self.env, self.log = cmd, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _join(self, timeout_s: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=None if timeout_s == math.inf else timeout_s)
        except subprocess.TimeoutExpired:
            return None


class ForkedWorker(WorkerProcess):
    """A worker forked from the fork server (worker/forked.py runs in it)."""

    def __init__(self, exp_path: Path, env: dict[str, str], log_path: Path) -> None:
        self.args = (str(exp_path), env, str(log_path))
        self.proc: BaseProcess | None = None

    def start(self) -> None:
        context = multiprocessing.get_context("forkserver")
        self.proc = context.Process(
            target=fork_target, args=self.args, name=WORKER_NAME, daemon=False
        )
        self.proc.start()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _join(self, timeout_s: float) -> int | None:
        assert self.proc is not None
        self.proc.join(None if timeout_s == math.inf else timeout_s)
        return self.proc.exitcode


FORK_SERVER_ENV = "LEM_FORK_SERVER"
IMPORT_SAFE_ENV = ("LEM_", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
"""Job environment read after import (at CUDA start or by the worker): fine to set after a fork."""


def spawn_reason(job: Job) -> str | None:
    """Why this job's worker must be spawned rather than forked; None if a fork is safe."""
    try:
        backend = json.loads(job.exp_path.read_bytes())["config"]["backend"]
    except (OSError, ValueError, KeyError, TypeError):
        return "the experiment spec could not be read here (the worker will say why)"
    found = descriptors().get(backend)
    if found is None or not found.forkable:
        return f"the {backend} engine is not forked (it starts threads, processes or CUDA)"
    late = sorted(k for k in job.env if not k.startswith(IMPORT_SAFE_ENV))
    if late:
        return f"the job sets {', '.join(late)}, which the preloaded engine read at import"
    return None


class LocalRunner(RunnerBase):
    name = "local"

    def __init__(self, fork_server: bool | None = None) -> None:
        super().__init__()
        # LEM_FORK_SERVER=0 turns it off (benchmarks compare the two; a last resort if a
        # platform's fork misbehaves).
        self.fork_server = (
            os.environ.get(FORK_SERVER_ENV, "1") != "0" if fork_server is None else fork_server
        )
        self._fork_server_started = False
        self._active: set[WorkerProcess] = set()

    def close(self) -> None:
        with self._lock:
            active = list(self._active)
        for worker in active:
            worker.kill()
        if self._fork_server_started:
            # The server (with the engine imported) would otherwise live until this process
            # exits; a private method of the stdlib, absent on other versions: then it does.
            stop = getattr(multiprocessing.forkserver._forkserver, "_stop", None)
            if stop is not None:
                stop()

    def on_interrupt(self, grace_s: float) -> None:
        with self._lock:
            active = list(self._active)
        for worker in active:
            worker.terminate(grace_s)

    def run(self, job: Job) -> Outcome:
        env = {**os.environ, **job.env, "PYTHONUNBUFFERED": "1"} | gpu_env(job.gpus)
        reason = (
            f"the runner's fork server is off ({FORK_SERVER_ENV}=0)"
            if not self.fork_server
            else spawn_reason(job)
        )
        t0 = time.monotonic()
        if self.stop_at is not None:
            return NOT_STARTED
        with job.log_path.open("ab") as log:
            worker: WorkerProcess
            if reason is None:
                multiprocessing.set_forkserver_preload([PRELOAD])
                # its parent is the fork server: it also watches this process (HOST_PID_ENV)
                env |= {HOST_PID_ENV: str(os.getpid())}
                worker = ForkedWorker(job.exp_path, env, job.log_path)
            else:
                env |= {
                    "LEM_PARENT_PID": str(os.getpid()),
                    WORKER_START_ENV: f"spawn: {reason}",
                }
                cmd = [sys.executable, "-m", "llenergymeasure.worker", str(job.exp_path)]
                worker = SpawnedWorker(cmd, env, log)
            with self._lock:
                if self.stopping():
                    return NOT_STARTED
                if isinstance(worker, ForkedWorker):
                    self._fork_server_started = True
                worker_env_launch(env)
                worker.start()
                self._active.add(worker)
            try:
                returncode, timed_out = worker.wait(job.timeout_s)
            finally:
                with self._lock:
                    self._active.discard(worker)
                worker.kill()
        return Outcome(returncode=returncode, timed_out=timed_out, wall_s=time.monotonic() - t0)


def worker_env_launch(env: dict[str, str]) -> None:
    """Stamp the launch time the worker reports as phases_s.worker_start_s."""
    env[LAUNCH_ENV] = repr(time.time())
