"""What a runner tells a worker about how it was launched (environment variables)."""

from __future__ import annotations

LAUNCH_ENV = "LEM_LAUNCH_UNIX_S"
"""time.time() when the runner launched the worker: the result's phases_s.worker_start_s."""
WORKER_START_ENV = "LEM_WORKER_START"
"""How the worker process started ('forkserver', or 'spawn' with the reason): the result's
worker_start."""
HOST_PID_ENV = "LEM_HOST_PID"
"""The orchestrator's pid, for a worker whose parent is not the orchestrator (a forked one):
the worker dies with it (worker/__main__.py)."""
