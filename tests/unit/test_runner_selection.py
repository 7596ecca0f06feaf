"""Runner choice, user settings and the docker runners' host-side pieces that need no engine.
Where an engine is involved, DOCKER_HOST points at a socket nobody listens on: the real docker
CLI then fails the way it does on a machine without a running engine."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.config.grid import load_campaign
from llenergymeasure.config.settings import SETTINGS_FILE, UserSettings, load_settings
from llenergymeasure.errors import ConfigError, PreflightError
from llenergymeasure.orchestrator.campaign import run_campaign_dir
from llenergymeasure.orchestrator.layout import create_campaign
from llenergymeasure.orchestrator.runners.docker import (
    CampaignProject,
    CliProcess,
    DockerEngine,
    compose_files,
    find_compose_file,
    project_name,
    source_checkout,
    unreachable_paths,
)
from llenergymeasure.orchestrator.runners.select import Workload, choose, plan_runner

WriteYaml = Callable[..., Path]
CHECKOUT = Path(__file__).resolve().parents[2]

CAMPAIGN = """\
name: pick
base: {n_prompts: 2}
"""


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nobody-listens.sock")


def workload(write_yaml: WriteYaml, extra: str = "") -> Workload:
    return Workload.of_campaign(load_campaign(write_yaml(CAMPAIGN + extra)), None)


# ------------------------------------------------------------------------------- precedence


@pytest.mark.parametrize(
    ("runner", "source", "expected"),
    [("local", "--runner", ("local", "--runner")), (None, None, ("auto", "default"))],
)
def test_the_choice_reads_the_resolved_settings(
    runner: str | None, source: str | None, expected: tuple[str, str]
) -> None:
    settings = UserSettings().override(source or "", runner=runner)
    assert choose(settings) == expected


def local() -> UserSettings:
    return UserSettings().override("--runner", runner="local")


def docker_persistent() -> UserSettings:
    return UserSettings().override("campaign file", runner="docker-persistent")


def test_local_needs_no_engine(write_yaml: WriteYaml, no_engine: None) -> None:
    plan = plan_runner(workload(write_yaml), local())
    assert (plan.name, plan.notices) == ("local", [])


def test_auto_without_an_engine_runs_locally_and_says_why(
    write_yaml: WriteYaml, no_engine: None
) -> None:
    plan = plan_runner(workload(write_yaml), UserSettings())
    assert plan.name == "local"
    (notice,) = plan.notices
    assert notice.startswith("running locally: ")
    assert "scripts/provision-docker.sh" in notice


def test_an_explicit_docker_runner_without_an_engine_is_refused(
    write_yaml: WriteYaml, no_engine: None
) -> None:
    with pytest.raises(PreflightError) as info:
        plan_runner(workload(write_yaml), docker_persistent())
    assert info.value.exit_code == 2
    assert "--runner local" in str(info.value)


def test_cold_start_notice_comes_before_the_engine_is_asked(
    write_yaml: WriteYaml, no_engine: None
) -> None:
    work = workload(write_yaml, "cold_start: true\n")
    with pytest.raises(PreflightError):
        plan_runner(work, docker_persistent())
    plan = plan_runner(work, local())
    assert plan.notices == []  # cold start changes nothing for local: its workers are fresh


def test_run_campaign_dir_picks_the_campaign_files_runner(
    write_yaml: WriteYaml, tmp_path: Path, no_engine: None
) -> None:
    """The library API without a runner honours `runner:` as `lem resume` does."""
    directory = create_campaign(load_campaign(write_yaml(CAMPAIGN + "runner: docker\n")), tmp_path)
    with pytest.raises(PreflightError, match=r"no Docker engine answers|docker CLI"):
        run_campaign_dir(directory)


# --------------------------------------------------------------------------------- settings


def test_settings_are_found_from_the_working_directory_upwards(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_text("runner: docker-persistent\n", encoding="utf-8")
    deeper = tmp_path / "a" / "b"
    deeper.mkdir(parents=True)
    assert load_settings(deeper).runner == "docker-persistent"


def test_no_settings_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path) == UserSettings()


def test_settings_typo_names_file_line_and_known_keys(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_text("# mine\nrunnr: local\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    message = str(info.value)
    assert f"{tmp_path / SETTINGS_FILE}, line 2, at runnr" in message
    assert "did you mean 'runner'?" in message


def test_settings_reject_an_unknown_runner(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_text("runner: podman\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1, at runner"):
        load_settings(tmp_path)


# ------------------------------------------------------------------- what containers can see


def test_files_outside_the_mounts_are_named(tmp_path: Path) -> None:
    inputs, results = tmp_path / "campaigns", tmp_path / "results"
    inside = ExperimentConfig.model_validate(
        {"prompts": {"source": "jsonl", "path": "p.jsonl"}, "model": str(results / "m")}
    )
    outside = ExperimentConfig.model_validate(
        {"prompts": {"source": "jsonl", "path": "../elsewhere/p.jsonl"}, "model": "/models/x"}
    )
    relative = ExperimentConfig.model_validate({"model": "./my-model"})
    hub = ExperimentConfig.model_validate({"model": "org/name"})
    assert unreachable_paths([inside, hub, ExperimentConfig()], inputs, results) == []
    assert unreachable_paths([outside, relative, outside], inputs, results) == [
        "model directory ./my-model (not absolute: it differs in a container)",
        "model directory /models/x",
        f"prompt file {inputs / '../elsewhere/p.jsonl'}",
    ]


def test_project_names_are_valid_for_compose(tmp_path: Path) -> None:
    assert project_name(tmp_path / "My.Sweep_20250101T000000Z-2") == (
        "lem-my-sweep_20250101t000000z-2"
    )


def test_a_missing_compose_file_is_refused_with_the_setting_to_fix_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LEM_COMPOSE_FILE", str(tmp_path / "compose.yaml"))
    with pytest.raises(PreflightError, match="set LEM_COMPOSE_FILE="):
        compose_files()


def test_compose_file_found_from_inside_a_copy_of_the_project(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LEM_COMPOSE_FILE", raising=False)
    (tmp_path / "compose.yaml").write_text("services: {other: {image: x}}\n")  # not ours
    project = tmp_path / "copy"
    (project / "campaigns" / "mine").mkdir(parents=True)
    shutil.copy(CHECKOUT / "compose.yaml", project / "compose.yaml")
    assert find_compose_file(project / "campaigns" / "mine") == project / "compose.yaml"
    # elsewhere: the checkout this editable install runs from, as pip recorded it
    assert source_checkout() == CHECKOUT
    assert find_compose_file(tmp_path) == CHECKOUT / "compose.yaml"


# ------------------------------------------------------------------- the CLI command wrapper


def test_cli_process_reports_a_container_signal_like_subprocess(tmp_path: Path) -> None:
    """Docker reports a container killed by SIGKILL as exit code 137."""
    with CliProcess(["sh", "-c", "echo out; exit 137"], tmp_path / "log") as cli:
        assert cli.wait(60) == -9
    with CliProcess(["sh", "-c", "exit 3"], tmp_path / "log") as cli:
        assert cli.wait(60) == 3
    assert (tmp_path / "log").read_text() == "out\n"


def test_cli_process_times_out_and_kills_its_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    polls: list[float] = []
    with CliProcess(
        ["sh", "-c", f"sleep 300 & echo $! > {pid_file}; wait"], tmp_path / "log"
    ) as cli:
        assert cli.wait(0.5, on_poll=lambda: polls.append(time.monotonic())) is None
    assert polls  # it polled while waiting
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


# ------------------------------------------------------------------- one project per campaign


@pytest.fixture
def campaign_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for key in ("PUID", "PGID", "LEM_RESULTS_DIR", "LEM_INPUT_DIR"):
        monkeypatch.delenv(key, raising=False)
    directory = tmp_path / "results" / "Sweep_20250101T000000Z"
    directory.mkdir(parents=True)
    return directory


def test_a_campaign_project_writes_its_compose_values(
    campaign_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUID", "4242")  # the caller's choice wins over the invoking user's
    monkeypatch.setenv("LEM_IMAGE_TAG", "v7")  # recorded: a hand re-run uses the same image
    engine = DockerEngine([CHECKOUT / "compose.yaml"])
    project = CampaignProject(engine, campaign_dir, campaign_dir.parent.parent / "campaigns")
    assert (campaign_dir / "compose.env").read_text(encoding="utf-8").splitlines() == [
        f"LEM_RESULTS_DIR={campaign_dir.parent}",
        f"LEM_INPUT_DIR={campaign_dir.parent.parent / 'campaigns'}",
        "PUID=4242",
        f"PGID={os.getgid()}",
        "LEM_IMAGE_TAG=v7",
    ]
    assert (campaign_dir.parent.parent / "hf").is_dir()  # made by the user, not by docker
    command = project.command("ps")
    assert command[1:3] == ["compose", "--file"]
    assert command[-5:] == [
        "--env-file", str(campaign_dir / "compose.env"),
        "--project-name", "lem-sweep_20250101t000000z", "ps",
    ]  # fmt: skip


def test_compose_env_holds_absolute_paths_for_a_relative_campaign_dir(
    campaign_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lem resume` with no arguments finds `results/<campaign>`: compose would read a
    relative `results` as an undefined named volume."""
    monkeypatch.chdir(campaign_dir.parent.parent)
    relative = campaign_dir.relative_to(campaign_dir.parent.parent)
    CampaignProject(DockerEngine([CHECKOUT / "compose.yaml"]), relative, Path("campaigns"))
    values = dict(
        line.split("=", 1)
        for line in (campaign_dir / "compose.env").read_text(encoding="utf-8").splitlines()
    )
    assert values["LEM_RESULTS_DIR"] == str(campaign_dir.parent)
    assert values["LEM_INPUT_DIR"] == str(campaign_dir.parent.parent / "campaigns")


def test_a_conflicting_mount_variable_in_the_environment_is_refused(
    campaign_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEM_INPUT_DIR", "/somewhere/else")
    with pytest.raises(PreflightError, match="unset LEM_INPUT_DIR"):
        CampaignProject(DockerEngine([CHECKOUT / "compose.yaml"]), campaign_dir, campaign_dir)
