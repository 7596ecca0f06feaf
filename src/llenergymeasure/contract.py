"""The files that cross the worker boundary, named once: the host writes EXP_FILE into an
experiment's directory and reads the rest; the worker (in a subprocess or a container) reads
EXP_FILE and writes RESULT_FILE or ERROR_FILE, TIMESERIES_FILE beside it; its output goes to
LOG_FILE. Nothing else is shared between them, but the environment a runner launches it with
(the *_ENV names below) and, for a forked worker, the fork target named here: the host never
imports the worker."""

EXP_FILE = "exp.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
TIMESERIES_FILE = "timeseries.parquet"
LOG_FILE = "worker.log"

LAUNCH_ENV = "LEM_LAUNCH_UNIX_S"
"""time.time() when the runner launched the worker: the result's phases_s.worker_start_s."""
WORKER_START_ENV = "LEM_WORKER_START"
"""How the worker process started ('forkserver', or 'spawn' with the reason): the result's
worker_start."""
HOST_PID_ENV = "LEM_HOST_PID"
"""The orchestrator's pid, for a worker whose parent is not the orchestrator (a forked one):
the worker dies with it (worker/__main__.py)."""
PRELOAD = "llenergymeasure.worker.preload"
"""What a fork server imports before it forks workers: the engines."""
WORKER_NAME = "lem-worker"
"""A forked worker's multiprocessing name: the fork server skips the host's main script for it."""


def fork_target(exp_path: str, env: dict[str, str], log_path: str) -> None:
    """What a worker forked from the local runner's fork server runs (in the child only)."""
    from llenergymeasure.worker.forked import child_main

    child_main(exp_path, env, log_path)
