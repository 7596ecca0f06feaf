"""A worker forked from the local runner's fork server (see orchestrator/runners/forkserver.py).

The server process imported the engine once, before any CUDA use; each worker forked from it
is a fresh process (new session, own CUDA context created on first use), with the job's
environment, its log on stdout/stderr, then the same entry point as `lem-worker exp.json`.
This module is imported by the host too (to name the target): it imports nothing heavy.
"""

from __future__ import annotations

import os
import sys
from multiprocessing import resource_tracker

from llenergymeasure.worker.launch import WORKER_START_ENV

PRELOAD = "llenergymeasure.worker.preload"


def child_main(exp_path: str, env: dict[str, str], log_path: str) -> None:
    os.setsid()  # its own process group, as a spawned worker: the runner kills the group
    env = env | {"LEM_PARENT_PID": str(os.getppid()), WORKER_START_ENV: "forkserver"}
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    # Its own resource tracker, as a spawned worker has: what the engine leaves registered is
    # reported in the worker's log, not on the campaign's terminal.
    resource_tracker._resource_tracker = resource_tracker.ResourceTracker()
    sys.argv = ["lem-worker", exp_path]
    from llenergymeasure.worker.__main__ import entry

    entry()
