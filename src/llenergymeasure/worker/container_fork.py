"""Fork server inside a `docker-persistent` container: the engine's imports paid once per
container, each experiment still a fresh process with its own CUDA context.

`python -m llenergymeasure.worker.container_fork serve` (started by the runner with
`docker exec -d` once the container is up) imports the engine (worker/preload.py, which
refuses if CUDA got initialised) and listens on a Unix socket. Each experiment is
`docker exec ... python -m llenergymeasure.worker.container_fork run exp.json`: a small
client that hands the server its environment and its stdout/stderr, waits, and exits with the
worker's exit code (a signal as the same signal), so `docker exec` reports it as a plain
`lem-worker exp.json` would. The server forks one child per request (own session, the job's
environment, then the `lem-worker` entry point); results are files, as always.

Stopping: SIGTERM/SIGINT to the client is passed to the worker (it unwinds and writes
error.json); if the client dies (SIGKILL, or its `docker exec` killed) the server kills the
worker's process group. Where the server could not start (preload failed) the client runs the
worker itself, a plain exec, and the result says why (worker_start). The server dies with its
container: nothing outlives the campaign.

Imports here stay light: the client runs once per experiment.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import time
from pathlib import Path
from typing import NoReturn

from llenergymeasure.contract import WORKER_START_ENV

SOCKET_PATH = Path("/tmp/lem-fork-server.sock")
FAILED_PATH = SOCKET_PATH.with_suffix(".failed")
"""Written by a server that could not preload the engine: the reason, for the result."""
CONNECT_WAIT_S = 120.0
"""How long a client waits for the server to listen (it is importing the engine meanwhile)."""
FORKED = "forkserver (in the persistent container, engine preloaded)"
MAX_MESSAGE = 1 << 20


def serve(path: Path = SOCKET_PATH) -> NoReturn:
    """Preload the engine, then fork a worker per request until the container stops."""
    from llenergymeasure.contract import PRELOAD

    try:
        __import__(PRELOAD)
    except BaseException as e:  # any failure: the clients run workers themselves
        FAILED_PATH.write_text(f"{type(e).__name__}: {e}", encoding="utf-8")
        raise SystemExit(1) from e
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    staging = path.with_suffix(".new")
    staging.unlink(missing_ok=True)
    listener.bind(str(staging))
    listener.listen(64)
    staging.rename(path)  # clients see the socket only once it accepts
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    workers: dict[socket.socket, int] = {}  # client connection -> its worker's pid
    by_pid: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select(timeout=0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                conn, _ = listener.accept()
                pid = _start(conn, listener, list(workers))
                if pid is None:
                    conn.close()
                    continue
                workers[conn], by_pid[pid] = pid, conn
                selector.register(conn, selectors.EVENT_READ)
            else:  # the client ended before its worker (killed): its worker goes too
                selector.unregister(sock)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(workers[sock], signal.SIGKILL)
        while by_pid:  # reap finished workers and tell their clients how they ended
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid not in by_pid:
                continue
            conn = by_pid.pop(pid)
            del workers[conn]
            with contextlib.suppress(KeyError):
                selector.unregister(conn)
            with contextlib.suppress(OSError):
                conn.send(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
            conn.close()


def _start(conn: socket.socket, listener: socket.socket, others: list[socket.socket]) -> int | None:
    """Fork a worker for the request on conn; its pid (sent to the client too)."""
    try:
        message, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, 2)
        request = json.loads(message)
    except (OSError, ValueError):
        return None
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return None
    pid = os.fork()
    if pid == 0:  # the worker: never returns into the server's loop
        code = 1
        try:
            for sock in (listener, conn, *others):
                sock.close()
            code = _child(request["exp_path"], request["env"], fds)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)  # no teardown of torch (as lem-worker's own fast exit)
    for fd in fds:
        os.close(fd)
    conn.send(json.dumps({"pid": pid, "server_pid": os.getpid()}).encode())
    return pid


def _child(exp_path: str, env: dict[str, str], fds: list[int]) -> int:
    os.setsid()  # its own process group: killing the group ends what it started too
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in fds:
        os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    os.environ.clear()
    os.environ.update(env | {WORKER_START_ENV: FORKED})
    os.environ.pop("LEM_PARENT_PID", None)  # the server is its parent, and it stays
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = ["lem-worker", exp_path]
    from llenergymeasure.worker.__main__ import main

    return main([exp_path])


def run(exp_path: str, path: Path = SOCKET_PATH) -> NoReturn:
    """Client: have the server fork the worker, pass on SIGTERM/SIGINT, exit as it did."""
    conn = _connect(path)
    if conn is None:
        reason = (
            FAILED_PATH.read_text(encoding="utf-8")
            if FAILED_PATH.exists()
            else f"nothing listened on {path} within {CONNECT_WAIT_S:.0f} s"
        )
        _exec_worker(exp_path, f"exec: the container's fork server is unavailable ({reason})")
    request = {"exp_path": exp_path, "env": dict(os.environ)}
    socket.send_fds(conn, [json.dumps(request).encode()], [1, 2])
    started = json.loads(conn.recv(MAX_MESSAGE) or b"{}")
    pid = started.get("pid")
    if not isinstance(pid, int):
        print("lem-worker: the fork server refused the request", file=sys.stderr)
        sys.exit(1)
    print(
        f"lem-worker: pid {pid}, forked by the fork server (pid {started.get('server_pid')})",
        file=sys.stderr,
        flush=True,
    )

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    ended = json.loads(conn.recv(MAX_MESSAGE) or b"{}")
    code = ended.get("exit")
    if not isinstance(code, int):  # the server died with the worker
        print("lem-worker: the fork server ended before the worker reported", file=sys.stderr)
        sys.exit(1)
    if code < 0:  # killed by a signal: end the same way, so docker exec says 128+N
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1)
    sys.exit(code)


def _connect(path: Path) -> socket.socket | None:
    deadline = time.monotonic() + CONNECT_WAIT_S
    while time.monotonic() < deadline and not FAILED_PATH.exists():
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            time.sleep(0.05)
            continue
        return conn
    return None


def _exec_worker(exp_path: str, reason: str) -> NoReturn:
    os.environ[WORKER_START_ENV] = reason
    os.execvp("lem-worker", ["lem-worker", exp_path])


def main(argv: list[str]) -> NoReturn:
    if argv == ["serve"]:
        serve()
    if len(argv) == 2 and argv[0] == "run":
        run(argv[1])
    print("usage: python -m llenergymeasure.worker.container_fork serve | run EXP_JSON")
    sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
