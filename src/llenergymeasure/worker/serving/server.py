"""The backend's own OpenAI-compatible server, in the worker's process tree, always stopped.

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
from dataclasses import dataclass
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
    proc: subprocess.Popen[bytes]
    launch_s: float
    log_path: Path
    oom_kills_at_start: int

    def exit_text(self) -> str | None:
        """None while the server runs; else how it ended, with `out of memory` (the error
        category oom) and what to lower where the kernel's OOM killer or the engine said so."""
        if (code := self.proc.poll()) is None:
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


async def _healthy(srv: RunningServer, deadline: float, within: str) -> None:
    """Until GET /health answers 200; each try bounded by the time left, not per read."""
    async with httpx.AsyncClient(trust_env=False) as client:
        while (exited := srv.exit_text()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BackendError(f"server not healthy within {within} (log: {srv.log_path})")
            try:
                async with asyncio.timeout(min(2.0, left)):
                    if (await client.get(srv.base_url + "/health")).status_code == 200:
                        return
            except (httpx.HTTPError, TimeoutError):
                pass
            await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
    tail = srv.log_path.read_text(errors="replace")[-800:]
    raise BackendError(f"{exited} before it was healthy:\n{tail}")
