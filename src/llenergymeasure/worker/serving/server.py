"""The backend's own OpenAI-compatible server, in the worker's process tree, always stopped;
or server.url's, which lem only waits for (`external()`) and never stops.

Started in a new session (its own process group) on a free 127.0.0.1 port; `launched()` waits
for GET /health within startup_timeout_s and, on any exit from the block (timeout, Ctrl+C, a
crash, success), kills the whole group: SIGTERM, then SIGKILL after a grace. Launch time is
measured from Popen to the first healthy answer, apart from any level.
"""

from __future__ import annotations

import asyncio
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
from llenergymeasure.oom import log_says_out_of_memory


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    base_url: str
    proc: subprocess.Popen[bytes] | None
    """None: server.url's, which lem neither started nor stops; watched by its health alone."""
    launch_s: float
    log_path: Path | None
    oom_kills_at_start: int = 0
    health_path: str = "/health"
    models: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def exit_text(self) -> str | None:
        """None while the server runs; else how it ended, with `out of memory` (the error
        category oom) and what to lower where the kernel's OOM killer or the engine said so."""
        if self.proc is None or self.log_path is None or (code := self.proc.poll()) is None:
            return None
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        said = log_says_out_of_memory(self.log_path.read_text(errors="replace")[-20_000:])
        if code == -signal.SIGKILL and oom_kills() > self.oom_kills_at_start:
            said = "the kernel's OOM killer"
        if said:
            how += f": out of memory ({said}); lower the KV cache (pytorch: passthrough_kwargs "
            how += "cb_num_blocks; vllm: kv_cache_memory_bytes) or the levels' load"
        return f"server {how}"

    def unresponsive(self, within_s: float = 10.0) -> str | None:
        """Why the server no longer serves (after a failed level), or None: it answers."""
        try:
            asyncio.run(_healthy(self, time.monotonic() + within_s, f"{within_s:g} s"))
        except BackendError as e:
            return self.exit_text() or f"server stopped answering: {e}"
        return None


def oom_kills() -> int:
    """The kernel's count of processes its OOM killer ended (/proc/vmstat; 0: unreadable)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/vmstat").read_text().split("oom_kill ", 1)[1].split()[0])
    return 0


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
    """Start `cmd`, wait for health (startup_timeout_s in total, however slowly /health
    answers), yield; the process group is gone when the block exits."""
    t0 = time.monotonic()
    oom_at_start = oom_kills()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            preexec_fn=_term_with_parent,  # noqa: PLW1509 (prctl only: async-signal-safe)
        )
    srv = RunningServer(f"http://127.0.0.1:{port}", proc, 0.0, log_path, oom_at_start)
    try:
        asyncio.run(
            _healthy(srv, t0 + startup_timeout_s, f"startup_timeout_s={startup_timeout_s:g} s")
        )
        srv.launch_s = time.monotonic() - t0
        yield srv
    finally:
        _kill_group(proc)


async def _healthy(srv: RunningServer, deadline: float, within: str) -> httpx.Response:
    """Until GET health_path answers 200; each try bounded by the time left, not per read."""
    url = srv.base_url + srv.health_path
    async with httpx.AsyncClient(trust_env=False) as client:
        while (exited := srv.exit_text()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                where = f"log: {srv.log_path}" if srv.log_path else url
                raise BackendError(f"server not healthy within {within} ({where})")
            try:
                async with asyncio.timeout(min(2.0, left)):
                    if (resp := await client.get(url)).status_code == 200:
                        return resp
            except (httpx.HTTPError, TimeoutError):
                pass
            await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
    tail = srv.log_path.read_text(errors="replace")[-800:] if srv.log_path else ""
    raise BackendError(f"{exited} before it was healthy:\n{tail}")


@contextlib.contextmanager
def external(url: str, startup_timeout_s: float) -> Iterator[RunningServer]:
    """A server lem did not start (server.url): healthy once GET /v1/models lists its models,
    within startup_timeout_s in all; left running on any exit from the block."""
    t0 = time.monotonic()
    srv = RunningServer(url, None, 0.0, None, health_path="/v1/models")
    within = f"startup_timeout_s={startup_timeout_s:g} s"
    resp = asyncio.run(_healthy(srv, t0 + startup_timeout_s, within))
    try:
        srv.models = [str(m["id"]) for m in resp.json()["data"]]
    except (ValueError, KeyError, TypeError) as e:
        raise BackendError(f"server.url {url}: /v1/models is not a model list ({e})") from e
    srv.launch_s = time.monotonic() - t0
    yield srv


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
