"""Runner `docker`: every experiment in a fresh container,
`docker compose run --rm <backend> lem-worker <exp.json>`, which exits when the worker does.
A container that runs past the time limit is killed and removed; on interrupt() it is sent
SIGTERM (the worker cleans up and exits) and removed if it still runs after the grace period.

Each worker starts cold on purpose (a new container and interpreter, the engine imported again:
nothing is shared between runs); its result says so (worker_start)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from llenergymeasure.contract import WORKER_START_ENV
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
    Image,
    env_args,
    outcome,
    read_spec,
    service_of,
)
from llenergymeasure.orchestrator.runners.local import worker_env_launch

COLD_START = "spawn: cold start on purpose (the docker runner: a fresh container per run)"


class EphemeralDockerRunner(RunnerBase):
    name = "docker"
    fresh_container_per_run = True

    def __init__(
        self, engine: DockerEngine, images: dict[str, Image], campaign_dir: Path, input_dir: Path
    ) -> None:
        super().__init__()
        self.images = images
        self.project = CampaignProject(engine, campaign_dir, input_dir)

    def open(self) -> None:
        self.project.remove_all()

    def close(self) -> None:
        self.project.close()

    def run(self, job: Job) -> Outcome:
        if self.stop_at is not None:
            return NOT_STARTED
        spec = read_spec(job)
        backend = spec.config.backend
        name = f"{self.project.name}-{spec.experiment_id}-c{spec.cycle}-a{spec.attempt}"
        env = job.env | gpu_env(job.gpus) | {WORKER_START_ENV: COLD_START}
        worker_env_launch(env)
        args = [
            "run", "--rm", "--no-TTY", "--name", name, *env_args(env),
            service_of(backend), "lem-worker", str(job.exp_path),
        ]  # fmt: skip
        found: list[ContainerRecord] = []
        signalled = False

        def poll() -> None:
            nonlocal signalled
            # --rm removes the container when it ends: note its id while it is there.
            if not found and (container := self.project.inspect(name)) is not None:
                found.append(container)
            if self.stop_at is None:
                return
            if not signalled and found:
                signalled = self.project.signal(name, signal.SIGTERM)
            if time.monotonic() >= self.stop_at:
                self.project.remove(name)
                cli.stop()

        t0 = time.monotonic()
        try:
            with self.project.run_cli(args, job.log_path) as cli:
                code = cli.wait(job.timeout_s, on_poll=poll)
        finally:
            # Timed out, interrupted or ended: the container must not outlive this call.
            self.project.remove(name)
        container = found[0] if found else ContainerRecord(name, None, self.images[backend].id)
        return outcome(code, t0, container)
