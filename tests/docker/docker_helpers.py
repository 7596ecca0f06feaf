"""Helpers for the Docker tests: the real `lem` CLI against the real engine, and looks inside
running containers. Nothing here fakes or patches the code under test."""

from __future__ import annotations

import contextlib
import functools
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from lem_cli import CLI_TIMEOUT_S, lem_cmd, lem_env
from python_on_whales import Container, DockerClient

from llenergymeasure.orchestrator.runners.docker import PROJECT_LABEL, project_name
from llenergymeasure.results.schema import schema_fingerprint

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "lem-test-base:bookworm"
# The tests' own image tag, never `latest`: real images on a developer's machine stay untouched
# and are never what these tests run. It names the schema fingerprint, so test runs of two
# versions on one machine (two checkouts) do not rebuild each other's image.
TEST_TAG = f"cpu-test-{schema_fingerprint()}"
IMAGE = f"llenergymeasure-pytorch:{TEST_TAG}"
CPU_COMPOSE = ["-f", str(REPO / "compose.yaml"), "-f", str(REPO / "compose.cpu.yaml")]
WHEELHOUSE = REPO / ".whl" / "docker-tests"
# A fixed port keeps PIP_FIND_LINKS, a build argument, the same between builds, and with it the
# build cache; another port is taken only when this one is busy.
WHEEL_PORT = 47613

# Runs inside a container: the pid of the lem-worker whose command line names the needle
# (`python .../lem-worker exp.json`, or in the persistent container the fork client `python -m
# ...container_fork run exp.json`, which stands for its forked worker; the init process's
# command line names both too).
FIND_WORKER = """
import os, sys, time
deadline = time.time() + 120
while time.time() < deadline:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
        except OSError:
            continue
        client = args[1:3] == [b"-m", b"llenergymeasure.worker.container_fork"]
        worker = len(args) > 2 and (args[1].endswith(b"/lem-worker") or client)
        if worker and sys.argv[1].encode() in b" ".join(args[2:]):
            print(pid)
            sys.exit(0)
    time.sleep(0.1)
sys.exit("no lem-worker for " + sys.argv[1])
"""


def image_env(**extra: str) -> dict[str, str]:
    """The environment for compose and lem: offline, and the tests' image tag."""
    return {**lem_env(), "LEM_IMAGE_TAG": TEST_TAG, **extra}


def build_pytorch(*build_args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`docker compose build pytorch` from the real Dockerfile on the local base image, pip
    served from the wheelhouse; the same arguments every time, so layers are reused."""
    return build_service("pytorch", *build_args, **env)


def build_service(service: str, *build_args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`docker compose build SERVICE` as build_pytorch does it."""
    env.setdefault("LEM_SCHEMA_FINGERPRINT", schema_fingerprint())
    with serve_directory(WHEELHOUSE) as url:
        return subprocess.run(
            ["docker", "compose", *CPU_COMPOSE, "build",
             "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
             "--build-arg", f"PIP_FIND_LINKS={url}",
             "--build-arg", "PIP_NO_INDEX=1",
             *build_args, service],
            env=image_env(**env), capture_output=True, text=True, check=False, timeout=1200,
        )  # fmt: skip


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve a directory over HTTP on the loopback (builds use the host network)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", WHEEL_PORT), handler)
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_lem(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        lem_cmd(*args),
        cwd=cwd,
        env=env or image_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


@contextlib.contextmanager
def lem_running(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """`lem ARGS` in the background; killed on exit if the test left it running."""
    proc = subprocess.Popen(
        lem_cmd(*args),
        cwd=cwd,
        env=env or image_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def wait_for(what: str, probe: Callable[[], T | None], within_s: float = 180.0) -> T:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"waited {within_s:g} s for {what}")


def campaign_dir_under(root: Path) -> Path | None:
    dirs = [p for p in root.glob("*") if (p / "manifest.json").is_file()] if root.exists() else []
    return dirs[0] if len(dirs) == 1 else None


def containers_of(docker: DockerClient, campaign_dir: Path) -> list[Container]:
    """Every container (running or not) of the campaign's compose project."""
    label = f"{PROJECT_LABEL}={project_name(campaign_dir)}"
    return list(docker.container.list(all=True, filters=[("label", label)]))


def networks_of(docker: DockerClient, campaign_dir: Path) -> list[str]:
    return [n.name for n in docker.network.list() if n.name.startswith(project_name(campaign_dir))]


def worker_pid(docker: DockerClient, container: str, needle: str) -> str:
    """Wait inside the container for the lem-worker running needle (an experiment id)."""
    out = docker.container.execute(container, ["python", "-c", FIND_WORKER, needle], user="0")
    return str(out).strip()


def worker_env(docker: DockerClient, container: str, pid: str) -> dict[str, str]:
    raw = docker.container.execute(container, ["cat", f"/proc/{pid}/environ"], user="0")
    pairs = (item.split("=", 1) for item in str(raw).split("\0") if "=" in item)
    return dict(pairs)


def kill_worker(docker: DockerClient, container: str, pid: str) -> None:
    """A crash, as the orchestrator sees one: the worker dies without writing anything.
    Detached: an ephemeral container ends with its worker, taking this exec with it."""
    script = f"import os, signal; os.kill({int(pid)}, signal.SIGKILL)"
    docker.container.execute(container, ["python", "-c", script], user="0", detach=True)


def check(*cmd: str) -> None:
    """Run a setup command; on failure, fail the tests with its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:2])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
