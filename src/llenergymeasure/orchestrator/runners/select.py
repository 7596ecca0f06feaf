"""Which runner a campaign gets: the `runner` of its resolved settings (config.settings.
resolve_settings: `--runner` > the campaign file's `runner:` > environment > `.lem-config.yaml`
> auto), read here and nowhere else. auto is docker when an engine answers and every
backend's image exists, else local with a notice that says why. Docker pre-flight runs here,
before any campaign directory is made."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llenergymeasure.config.campaign import SlurmSettings
from llenergymeasure.config.choices import RunnerChoice
from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.config.grid import Campaign
from llenergymeasure.config.settings import UserSettings
from llenergymeasure.errors import RUN_LOCALLY, PreflightError
from llenergymeasure.orchestrator.experiments import ExperimentSpecs
from llenergymeasure.orchestrator.manifest import ManifestStore, to_resume
from llenergymeasure.orchestrator.runners import JobQueue, Runner
from llenergymeasure.orchestrator.runners.docker import DockerEngine, Image, unreachable_paths

RunnerName = Literal["local", "docker", "docker-persistent", "slurm"]


@dataclass(frozen=True)
class Workload:
    """What a runner must be able to run: the experiments and where their files live."""

    configs: list[ExperimentConfig]
    input_dir: Path  # the campaign file's directory (exp.json's base_dir)
    results_dir: Path  # the results root that holds the campaign directory
    cold_start: bool

    @property
    def backends(self) -> list[str]:
        return sorted({c.backend for c in self.configs})

    @classmethod
    def of_campaign(cls, campaign: Campaign, output_root: Path | None) -> Workload:
        return cls(
            configs=[e.config for e in campaign.experiments],
            input_dir=campaign.base_dir,
            results_dir=Path(output_root or campaign.config.output_dir).resolve(),
            cold_start=campaign.config.cold_start,
        )

    @classmethod
    def of_campaign_dir(cls, campaign_dir: Path, retry_failed: bool = False) -> Workload:
        """What is left to run in an existing campaign (for `lem resume`)."""
        manifest = ManifestStore(campaign_dir).load()
        specs = ExperimentSpecs(campaign_dir)
        left = to_resume(campaign_dir, manifest, retry_failed)
        pending = dict.fromkeys(e.experiment_id for e in left)
        return cls(
            configs=[specs.config(experiment_id) for experiment_id in pending],
            input_dir=specs.base_dir,
            results_dir=campaign_dir.resolve().parent,
            cold_start=manifest.cold_start,
        )


@dataclass(frozen=True)
class RunnerPlan:
    """The chosen runner, checked and ready to open on a campaign directory."""

    name: RunnerName
    notices: list[str]
    engine: DockerEngine | None = None
    images: dict[str, Image] | None = None
    input_dir: Path | None = None
    slurm: SlurmSettings | None = None

    def open(self, campaign_dir: Path) -> Runner:
        return OPENERS[self.name](self, campaign_dir)

    @property
    def remote(self) -> bool:
        """Its workers run elsewhere (a batch scheduler's nodes): no device here is locked."""
        return self.name in QUEUES


def _local(_plan: RunnerPlan, _campaign_dir: Path) -> Runner:
    from llenergymeasure.orchestrator.runners.local import LocalRunner

    return LocalRunner()


def _docker(plan: RunnerPlan, campaign_dir: Path) -> Runner:
    from llenergymeasure.orchestrator.runners.docker_ephemeral import EphemeralDockerRunner

    assert plan.engine is not None and plan.images is not None and plan.input_dir
    return EphemeralDockerRunner(plan.engine, plan.images, campaign_dir, plan.input_dir)


def _docker_persistent(plan: RunnerPlan, campaign_dir: Path) -> Runner:
    from llenergymeasure.orchestrator.runners.docker_persistent import PersistentDockerRunner

    assert plan.engine is not None and plan.input_dir
    return PersistentDockerRunner(plan.engine, campaign_dir, plan.input_dir)


def _slurm(plan: RunnerPlan, campaign_dir: Path) -> Runner:  # issue 16
    from llenergymeasure.orchestrator.runners.slurm import SlurmRunner

    return SlurmRunner(plan.slurm or SlurmSettings(), campaign_dir)


OPENERS: dict[str, Callable[[RunnerPlan, Path], Runner]] = {
    "local": _local,
    "docker": _docker,
    "docker-persistent": _docker_persistent,
    "slurm": _slurm,
}
"""How each runner opens on a campaign directory: a new runner plugs in with one entry here
(and its name in RunnerName / config.choices.RunnerChoice)."""


def _slurm_queue() -> JobQueue:
    from llenergymeasure.orchestrator.runners.slurm import SlurmQueue

    return SlurmQueue()


QUEUES: dict[str, Callable[[], JobQueue]] = {"slurm": _slurm_queue}
"""The batch runners, whose jobs outlive the orchestrator, and how to ask their scheduler."""


def job_queue(runner: str) -> JobQueue | None:
    """The scheduler of a batch runner; None for a runner whose workers end with lem."""
    make = QUEUES.get(runner)
    return make() if make is not None else None


def choose(settings: UserSettings) -> tuple[RunnerChoice, str]:
    """The runner asked for and who asked."""
    if settings.runner is None:
        return "auto", "default"
    return settings.runner, settings.sources.get("runner", "default")


def plan_runner(workload: Workload, settings: UserSettings) -> RunnerPlan:
    choice, source = choose(settings)
    notices: list[str] = []
    if choice == "docker-persistent" and workload.cold_start:
        notices.append("cold_start: every experiment gets a fresh container (runner docker)")
        choice = "docker"
    if choice == "local":
        return RunnerPlan("local", notices)
    if choice == "slurm":  # runner slurm (issue 16): settings checked before any submission
        from llenergymeasure.orchestrator.runners.slurm import preflight

        preflight(settings.slurm, workload.results_dir, settings.sources)
        return RunnerPlan("slurm", notices, slurm=settings.slurm)
    if choice == "auto":
        try:
            engine = DockerEngine.connect()
        except PreflightError as e:
            return RunnerPlan("local", [*notices, f"running locally: {e}"])
        found = {b: engine.image(b) for b in workload.backends}
        missing = [b for b, image in found.items() if image is None]
        if missing:
            hint = engine.build_hint(missing[0])
            return RunnerPlan(
                "local",
                [*notices, f"running locally: no image for {', '.join(missing)} ({hint})"],
            )
        stale = [b for b, image in found.items() if image is not None and not image.current]
        if stale:  # auto never stops on an old image it was not asked to use
            hint = engine.build_hint(stale[0])
            return RunnerPlan(
                "local",
                [
                    *notices,
                    f"running locally: the image for {', '.join(stale)} was built from another "
                    f"version of llenergymeasure ({hint})",
                ],
            )
        choice = "docker"
    else:
        engine = DockerEngine.connect()
    images = engine.require_images(workload.backends)
    hidden = unreachable_paths(workload.configs, workload.input_dir, workload.results_dir)
    if hidden:
        raise PreflightError(
            f"runner {choice} (from {source}): a container sees only {workload.input_dir} "
            f"(read-only) and {workload.results_dir}, not: {'; '.join(hidden)}. Move them "
            "there, or use {0}",
            options=(RUN_LOCALLY,),
        )
    return RunnerPlan(choice, notices, engine, images, workload.input_dir)
