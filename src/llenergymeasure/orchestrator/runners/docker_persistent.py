"""Runner `docker-persistent`: one long-lived container per backend per campaign
(`docker compose up -d <backend>`), each experiment a `docker compose exec` in it, and `down`
when the campaign stops, however it stops.

For an engine whose descriptor says `forkable`, the container runs a fork server
(worker/container_fork.py) started right after the container: the engine is imported once per
container, and each experiment is a fresh process forked from it (own CUDA context), started
by a small client exec'd in its place. Otherwise, or with LEM_FORK_SERVER=0, the experiment is
a plain `lem-worker <exp.json>` exec; the result says which (worker_start).

A worker that runs past the time limit may still hold the GPU after its exec is gone; removing
its container stops it for sure, and the next experiment starts a fresh one. While other
experiments run in that container (with --gpus), only the late worker's processes are killed.
On interrupt() the worker is sent SIGTERM inside the container (it cleans up and exits), and
stopped that same way if it still runs after the grace period."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from pathlib import Path

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from llenergymeasure.config.descriptor import descriptor
from llenergymeasure.contract import WORKER_START_ENV
from llenergymeasure.errors import DispatchError
from llenergymeasure.orchestrator.runners import (
    NOT_STARTED,
    ContainerRecord,
    Job,
    Outcome,
    RunnerBase,
    gpu_env,
)
from llenergymeasure.orchestrator.runners.docker import (
    CampaignProject,
    DockerEngine,
    env_args,
    last_line,
    outcome,
    read_spec,
    service_of,
)
from llenergymeasure.orchestrator.runners.local import (
    FORK_SERVER_ENV,
    spawn_reason,
    worker_env_launch,
)

FORK_CLIENT = ["python", "-m", "llenergymeasure.worker.container_fork"]
"""Runs in the container: `serve` (the fork server), `run exp.json` (one forked worker)."""

# Runs inside the container, as root: send signal argv[2] to every process whose command line
# names argv[1], and with argv[3] == "tree" to their descendants (a worker's own processes).
KILL_MATCHING = """
import os, sys
sig, tree = int(sys.argv[2]), sys.argv[3] == "tree"
parent, matching = {}, set()
for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
    try:
        stat = open(f"/proc/{pid}/stat").read()
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        continue
    parent[pid] = int(stat.rsplit(")", 1)[1].split()[1])
    if sys.argv[1].encode() in cmdline and pid != os.getpid():
        matching.add(pid)
while tree:
    more = {pid for pid, ppid in parent.items() if ppid in matching} - matching
    if not more:
        break
    matching |= more
for pid in matching:
    try:
        os.kill(pid, sig)
    except OSError:
        pass
"""


def kill_matching(
    client: DockerClient, container: str, marker: str, sig: signal.Signals = signal.SIGKILL
) -> None:
    """SIGKILL the processes in a running container whose command line contains marker, and
    everything they started; another signal goes to the matching processes alone (SIGTERM:
    the worker ends its own engine processes as it cleans up)."""
    tree = "tree" if sig == signal.SIGKILL else "only"
    command = ["python", "-c", KILL_MATCHING, marker, str(int(sig)), tree]
    try:
        client.container.execute(container, command, user="0")
    except DockerException as e:
        raise DispatchError(f"could not stop a worker in {container}: {last_line(e)}") from e


class PersistentDockerRunner(RunnerBase):
    name = "docker-persistent"

    def __init__(
        self,
        engine: DockerEngine,
        campaign_dir: Path,
        input_dir: Path,
        fork_server: bool | None = None,
    ) -> None:
        super().__init__()
        self.fork_server = (
            os.environ.get(FORK_SERVER_ENV, "1") != "0" if fork_server is None else fork_server
        )
        self.project = CampaignProject(engine, campaign_dir, input_dir)
        # Worker threads share the containers: starting, counting and recycling them is locked.
        self.services: dict[str, ContainerRecord] = {}
        self.busy: Counter[str] = Counter()

    def open(self) -> None:
        self.project.remove_all()

    def close(self) -> None:
        with self._lock:  # a container start under way ends first; none begins after
            self.project.close()

    def run(self, job: Job) -> Outcome:
        t0 = time.monotonic()
        spec = read_spec(job)
        backend = spec.config.backend
        with self._lock:
            if self.stop_at is not None:
                return NOT_STARTED
            container, start_s = self._service(backend)
            self.busy[backend] += 1
        env = job.env | gpu_env(job.gpus)
        reason = (
            f"the runner's fork server is off ({FORK_SERVER_ENV}=0)"
            if not self.fork_server
            else spawn_reason(job)
        )
        if reason is None:
            command = [*FORK_CLIENT, "run", str(job.exp_path)]
        else:
            env[WORKER_START_ENV] = f"exec: {reason}"
            command = ["lem-worker", str(job.exp_path)]
        worker_env_launch(env)
        args = ["exec", "--no-TTY", *env_args(env), service_of(backend), *command]
        signalled = killed = False

        def poll() -> None:
            nonlocal signalled, killed
            if self.stop_at is None or killed:
                return
            if not signalled:  # `exec` does not pass signals on: signal the worker in place
                signalled = True
                with contextlib.suppress(DispatchError):  # then it is killed at _kill_at
                    kill_matching(self.project.client, container.name, marker, signal.SIGTERM)
            if time.monotonic() >= self.stop_at:
                killed = True
                self._stop_late_worker(backend, container, job)

        marker = str(job.exp_path)
        try:
            with self.project.run_cli(args, job.log_path) as cli:
                code = cli.wait(job.timeout_s, on_poll=poll)
                if code is None:
                    self._stop_late_worker(backend, container, job)
        finally:
            with self._lock:
                self.busy[backend] -= 1
        return outcome(code, t0, container, start_s)

    def _stop_late_worker(self, backend: str, container: ContainerRecord, job: Job) -> None:
        with self._lock:  # nothing new starts in the container while it is being removed
            if self.busy[backend] == 1:
                self.services.pop(backend, None)
                self.project.remove(container.name)
                return
        kill_matching(self.project.client, container.name, str(job.exp_path))

    def _service(self, backend: str) -> tuple[ContainerRecord, float]:
        """The backend's running container, started on first use or when it has died, and
        the seconds spent starting it (0 when it was running)."""
        known = self.services.get(backend)
        if known is not None and self._running(known):
            return known, 0.0
        self.project.refuse_if_closed()
        t0 = time.monotonic()
        try:
            service = service_of(backend)
            self.project.client.compose.up(
                [service], detach=True, wait=True, wait_timeout=60, quiet=True
            )
            (started,) = self.project.client.compose.ps(services=[service])
        except (DockerException, ValueError) as e:
            detail = last_line(e) if isinstance(e, DockerException) else str(e)
            raise DispatchError(f"could not start the {backend} container: {detail}") from e
        container = self.project.inspect(started.id)
        if container is None:
            raise DispatchError(f"the {backend} container stopped right after it started")
        if self.fork_server and descriptor(backend).forkable:
            try:  # it imports the engine while the first client waits for it
                self.project.client.container.execute(
                    container.name, [*FORK_CLIENT, "serve"], detach=True
                )
            except DockerException as e:
                raise DispatchError(
                    f"could not start the fork server in {container.name}: {last_line(e)}"
                ) from e
        self.services[backend] = container
        return container, time.monotonic() - t0

    def _running(self, container: ContainerRecord) -> bool:
        try:
            return bool(self.project.client.container.inspect(container.name).state.running)
        except DockerException:
            return False
