"""A worker forked from the local runner's fork server (see orchestrator/runners/forkserver.py).

The server process imported the engine once, before any CUDA use; each worker forked from it
is a fresh process (new session, own CUDA context created on first use), with the job's
environment, its log on stdout/stderr, then the same entry point as `lem-worker exp.json`.
If the server holds CUDA state after all (an engine initialised CUDA at import: Python's
forkserver ignores the preload's ImportError and keeps forking), CUDA is unusable in the fork,
so the worker replaces itself with a fresh interpreter (same pid: the runner's wait, signals
and kill are unchanged) and its result says why (worker_start).
This module is imported by the host too (to name the target): it imports nothing heavy.
"""

from __future__ import annotations

import os
import sys
from multiprocessing import forkserver, resource_tracker

from llenergymeasure.contract import WORKER_START_ENV

CUDA_IN_SERVER = "the fork server initialised CUDA while preloading the engines"
"""Why a worker was spawned rather than forked, when cuda_initialised() held in its server."""


def cuda_initialised() -> bool:
    """CUDA was initialised in this process, or in the process it was forked from (torch's
    own state: set by its CUDA start-up, inherited by a fork, which torch then marks bad)."""
    cuda = getattr(sys.modules.get("torch"), "cuda", None)
    if cuda is None:  # torch not imported: nothing can have initialised CUDA through it
        return False
    return bool(getattr(cuda, "_initialized", False) or cuda._is_in_bad_fork())


def child_main(exp_path: str, env: dict[str, str], log_path: str) -> None:
    os.setsid()  # its own process group, as a spawned worker: the runner kills the group
    # multiprocessing hands each child the host's end of the server's "alive" pipe (so it could
    # fork more); held here, the server outlives a SIGKILLed host and so does this worker.
    # Closed, the server exits with the host and PR_SET_PDEATHSIG takes this worker down too.
    _close_private_fd(forkserver._forkserver, "_forkserver_alive_fd")
    unsafe = cuda_initialised()
    started = f"spawn: {CUDA_IN_SERVER}" if unsafe else "forkserver"
    env = env | {"LEM_PARENT_PID": str(os.getppid()), WORKER_START_ENV: started}
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
    _close_private_fd(resource_tracker._resource_tracker, "_fd")
    resource_tracker._resource_tracker = resource_tracker.ResourceTracker()
    if unsafe:  # a plain worker, as if spawned: what the server passed in is closed by now
        print(f"lem-worker: {CUDA_IN_SERVER}: pid {os.getpid()} restarts fresh", flush=True)
        null = os.open(os.devnull, os.O_RDONLY)  # stdin as a spawned worker's (the server's
        os.dup2(null, 0)  # own /dev/null is close-on-exec)
        os.close(null)
        os.execv(sys.executable, [sys.executable, "-m", "llenergymeasure.worker", exp_path])
    sys.argv = ["lem-worker", exp_path]
    from llenergymeasure.worker.__main__ import entry

    entry()


def _close_private_fd(owner: object, name: str) -> None:
    """Close a file descriptor multiprocessing keeps in a private attribute (3.10-3.13)."""
    fd = getattr(owner, name, None)
    if isinstance(fd, int):
        os.close(fd)
        setattr(owner, name, None)
