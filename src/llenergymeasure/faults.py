"""Named fault-injection points for the crash tests, inert unless LEM_CRASHPOINT is set.

Crash safety cannot be shown by killing a process at random times alone: the windows that
matter (half a manifest written, a result on disk whose manifest entry still says `running`)
last microseconds. Like etcd's gofail, the code marks those places with `crashpoint(name)`,
and a test arms one of them in a process's environment:

    LEM_CRASHPOINT=<name>:<n>[:<action>][@<VAR>=<value>[&<VAR>=<value>...]][,...]

fires on the n-th time this process passes `name`. The action is what really happens to a
process there: `kill` (default) SIGKILLs it, `segv` reads address 0 (a real SIGSEGV),
`exit` ends it at once with code 0 and no result, `hang` sleeps (a worker that never cleans
up), `oom` raises torch's CUDA out-of-memory error (a GPU condition this project's CPU test
machines cannot reach otherwise). `@VAR=value` arms the point only in a process whose
environment has VAR=value (e.g. @LEM_ATTEMPT=1: only a worker's first attempt; workers get
LEM_EXPERIMENT_ID, LEM_CYCLE and LEM_ATTEMPT). Without the variable every call is one
environment lookup and returns.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections import Counter

ENV = "LEM_CRASHPOINT"
ACTIONS = ("kill", "segv", "exit", "hang", "oom")
_hits: Counter[str] = Counter()


def crashpoint(name: str) -> None:
    """Do what LEM_CRASHPOINT arms at this point, if anything."""
    armed = os.environ.get(ENV)
    if not armed:
        return
    _hits[name] += 1
    for spec in armed.split(","):
        point, _, condition = spec.partition("@")
        parts = point.split(":")
        if parts[0] != name or int(parts[1]) != _hits[name]:
            continue
        if condition and not all(
            os.environ.get(var) == value
            for var, _, value in (c.partition("=") for c in condition.split("&"))
        ):
            continue
        _fire(parts[2] if len(parts) > 2 else "kill", name)


def _fire(action: str, name: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "segv":
        ctypes.string_at(0)
    elif action == "exit":
        os._exit(0)
    elif action == "hang":
        while True:
            time.sleep(3600)
    elif action == "oom":
        import torch

        raise torch.cuda.OutOfMemoryError(
            f"CUDA out of memory. Tried to allocate 20.00 GiB (injected at {name})"
        )
    raise ValueError(f"{ENV}: unknown action {action!r} at {name}; one of {', '.join(ACTIONS)}")
