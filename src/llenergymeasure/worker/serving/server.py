"""The backend's own OpenAI-compatible server, in the worker's process tree, always stopped.

Started in a new session (its own process group) on a free 127.0.0.1 port; `launched()` waits
for GET /health within startup_timeout_s and, on any exit from the block (timeout, Ctrl+C, a
crash, success), kills the whole group: SIGTERM, then SIGKILL after a grace. Launch time is
measured from Popen to the first healthy answer, apart from any level.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from llenergymeasure.errors import BackendError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    base_url: str
    pid: int | None
    """None: server.url's, which lem did not start."""
    launch_s: float
    log_path: Path | None
    models: list[str] = field(default_factory=list)


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


def _term_with_parent() -> None:
    """In the server's child before exec: SIGTERM it if the worker dies (even by SIGKILL),
    so a killed worker leaves no server behind; libc was loaded before the fork."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # what ignored SIGTERM, and a dead leader's strays
    proc.wait(5)
    _wait_group_gone(proc.pid, 5.0)


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    """Until no live process is left in the group: SIGKILL is delivered at once, but a killed
    child (reparented, not ours to wait for) can still be running its exit for a while on a
    loaded host, and 'stopped' must mean gone (seen: the test's server child alive after)."""
    deadline = time.monotonic() + timeout_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc (Linux)."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        return []
    out = []
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(entry.name))
    return out


@contextlib.contextmanager
def launched(
    cmd: list[str],
    port: int,
    startup_timeout_s: float,
    log_path: Path,
    env: dict[str, str] | None = None,
) -> Iterator[RunningServer]:
    """Start `cmd`, wait for health, yield; the process group is gone when the block exits."""
    t0 = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            preexec_fn=_term_with_parent,  # noqa: PLW1509 (prctl only: async-signal-safe)
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = t0 + startup_timeout_s
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-800:]
                raise BackendError(
                    f"server exited with code {proc.returncode} before it was healthy:\n{tail}"
                )
            try:
                if httpx.get(base + "/health", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise BackendError(
                    f"server not healthy within startup_timeout_s={startup_timeout_s:g} s "
                    f"(log: {log_path})"
                )
            time.sleep(0.25)
        yield RunningServer(base, proc.pid, time.monotonic() - t0, log_path)
    finally:
        _kill_group(proc)


@contextlib.contextmanager
def external(url: str, startup_timeout_s: float) -> Iterator[RunningServer]:
    """A server lem did not start (server.url): healthy once GET /v1/models lists its models,
    within startup_timeout_s in all; left running on any exit from the block."""
    t0 = time.monotonic()
    deadline = t0 + startup_timeout_s
    problem = "no answer"
    with httpx.Client(trust_env=False) as client:  # loopback: never through a proxy
        while (left := deadline - time.monotonic()) > 0:
            try:
                resp = client.get(url + "/v1/models", timeout=min(2.0, left))
                if resp.status_code == 200:
                    models = [str(m["id"]) for m in resp.json()["data"]]
                    break
                problem = f"HTTP {resp.status_code}"
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
                problem = f"{type(e).__name__}: {e}"
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        else:
            raise BackendError(
                f"server.url {url} did not list its models (GET /v1/models) within "
                f"startup_timeout_s={startup_timeout_s:g} s: {problem}"
            )
    yield RunningServer(url, None, time.monotonic() - t0, None, models)


def served_model(models: list[str], wanted: list[str], url: str) -> str:
    """The model name to request from server.url: the one it serves, or, of several, the
    experiment's (by name or path)."""
    if len(models) == 1:
        return models[0]
    found = next((m for m in models if m in wanted), None)
    if found is None:
        raise BackendError(
            f"server.url {url} serves {', '.join(models) or 'no model'}; none is the "
            f"experiment's model ({', '.join(dict.fromkeys(wanted))})"
        )
    return found
