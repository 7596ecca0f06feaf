"""Runner `docker-persistent`: one long-lived container per backend per campaign
(`docker compose up -d <backend>`), each experiment a `docker compose exec <backend>
lem-worker <exp.json>` in it, and `down` when the campaign stops, however it stops.

A worker that runs past the time limit may still hold the GPU after its exec is gone; only
removing its container stops it for sure, so the next experiment starts a fresh one."""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from python_on_whales.exceptions import DockerException

from llenergymeasure.errors import DispatchError
from llenergymeasure.orchestrator.runners import ContainerRecord, Job, Outcome, gpu_env
from llenergymeasure.orchestrator.runners.docker import (
    CampaignProject,
    CliProcess,
    DockerEngine,
    env_args,
    last_line,
    outcome,
    read_spec,
)


class PersistentDockerRunner:
    name = "docker-persistent"
    fresh_container_per_run = False

    def __init__(self, engine: DockerEngine, campaign_dir: Path, input_dir: Path) -> None:
        self.project = CampaignProject(engine, campaign_dir, input_dir)
        self.services: dict[str, ContainerRecord] = {}

    def __enter__(self) -> PersistentDockerRunner:
        self.project.remove_all()  # left by an orchestrator that was killed outright
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.services.clear()
        self.project.remove_all()

    def run(self, job: Job) -> Outcome:
        spec = read_spec(job)
        backend = spec.config.backend
        container = self._service(backend)
        cmd = self.project.command(
            "exec",
            "--no-TTY",
            *env_args(job.env | gpu_env(job.gpus)),
            backend,
            "lem-worker",
            str(job.exp_path),
        )
        t0 = time.monotonic()
        with CliProcess(cmd, job.log_path) as cli:
            code = cli.wait(job.timeout_s)
            if code is None:
                self.services.pop(backend)
                self.project.remove(container.name)
        return outcome(code, t0, container)

    def _service(self, backend: str) -> ContainerRecord:
        """The backend's running container, started on first use or when it has died."""
        known = self.services.get(backend)
        if known is not None and self._running(known):
            return known
        try:
            self.project.client.compose.up(
                [backend], detach=True, wait=True, wait_timeout=60, quiet=True
            )
            (started,) = self.project.client.compose.ps(services=[backend])
        except (DockerException, ValueError) as e:
            detail = last_line(e) if isinstance(e, DockerException) else str(e)
            raise DispatchError(f"could not start the {backend} container: {detail}") from e
        container = self.project.inspect(started.id)
        if container is None:
            raise DispatchError(f"the {backend} container stopped right after it started")
        self.services[backend] = container
        return container

    def _running(self, container: ContainerRecord) -> bool:
        try:
            return bool(self.project.client.container.inspect(container.name).state.running)
        except DockerException:
            return False
