"""Both docker runners through the real `lem` CLI, a real engine and real tiny-model inference
in containers: a 2x2 campaign, a worker that crashes, a timeout, Ctrl+C and resume; after every
test no container or network of its campaigns is left."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_helpers import (
    campaign_dir_under,
    containers_of,
    image_env,
    kill_worker,
    lem_running,
    networks_of,
    run_lem,
    wait_for,
    worker_env,
    worker_pid,
)
from lem_cli import explain, load_manifest, only_campaign_dir, write
from python_on_whales import DockerClient
from python_on_whales.exceptions import NoSuchContainer

from llenergymeasure.orchestrator.manifest import Manifest, ManifestEntry
from llenergymeasure.orchestrator.runners.docker import project_name
from llenergymeasure.results.schema import ErrorRecord, ExperimentResult

pytestmark = pytest.mark.docker

RUNNERS = ["docker", "docker-persistent"]
HF_SENTINEL = "hf_never_in_a_file_4b1d"
BASE = """\
cycles: 1
base:
  model: builtin:tiny-llama
  n_prompts: 2
  max_output_tokens: 4
  warmup: {runs: 1}
"""
# Far longer than any test waits (65 batches of 1500 tokens): it ends only when stopped.
LONG = "{n_prompts: 64, max_output_tokens: 1500}"
TINY = "{n_prompts: 1, max_output_tokens: 2, warmup: {runs: 0}}"


@pytest.fixture(autouse=True)
def _nothing_left_behind(docker: DockerClient, tmp_path: Path) -> Iterator[None]:
    """Every test: no container or network of its campaigns remains (any that does is
    removed after it is reported, so that one failure does not leak into the machine)."""
    yield
    left: list[str] = []
    for manifest in tmp_path.rglob("manifest.json"):
        campaign_dir = manifest.parent
        for container in containers_of(docker, campaign_dir):
            left.append(f"container {container.name}")
            docker.container.remove(container.id, force=True)
        for network in networks_of(docker, campaign_dir):
            left.append(f"network {network}")
            docker.network.remove(network)
    assert left == []


def entry_with(manifest: Manifest, **label: object) -> ManifestEntry:
    return next(e for e in manifest.entries if label.items() <= e.label.items())


def running_worker(
    docker: DockerClient, out: Path, runner: str, **label: object
) -> tuple[Path, ManifestEntry, str, str]:
    """(campaign dir, entry, container, worker pid) of the experiment with this label, once
    its worker runs."""
    campaign_dir = wait_for("the campaign directory", lambda: campaign_dir_under(out))
    entry = entry_with(load_manifest(campaign_dir), **label)
    project = project_name(campaign_dir)
    container = (
        f"{project}-{entry.experiment_id}-c{entry.cycle}-a1"
        if runner == "docker"
        else f"{project}-pytorch-1"
    )
    wait_for(f"container {container}", lambda: _running(docker, container))
    return campaign_dir, entry, container, worker_pid(docker, container, entry.experiment_id)


def _running(docker: DockerClient, name: str) -> bool | None:
    try:
        return True if docker.container.inspect(name).state.running else None
    except NoSuchContainer:
        return None


@pytest.mark.parametrize("runner", RUNNERS)
def test_grid_campaign_runs_in_containers(
    docker: DockerClient, pytorch_image: str, tmp_path: Path, runner: str
) -> None:
    campaign_file = write(
        tmp_path / "grid.yaml",
        "name: grid\n" + BASE + "grid:\n  batch_size: [1, 2]\n  precision: [fp32, bf16]\n",
    )
    env = image_env(HF_TOKEN=HF_SENTINEL)
    proc = run_lem(
        "campaign", campaign_file, "-o", "out", "--runner", runner, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, explain(proc)
    assert f"runner {runner}" in proc.stderr, explain(proc)

    campaign_dir = only_campaign_dir(tmp_path / "out")
    manifest = load_manifest(campaign_dir)
    assert manifest.counts()["done"] == 4
    image_id = docker.image.inspect(pytorch_image).id
    project = project_name(campaign_dir)
    for entry in manifest.entries:
        assert entry.runner == runner
        assert entry.image_digest == image_id
        assert entry.container_id
        exp_dir = campaign_dir / Path(entry.exp_path).parent
        result = ExperimentResult.model_validate_json((exp_dir / "result.json").read_bytes())
        assert result.environment.in_container
        assert result.output_tokens == 2 * 4
        for produced in (exp_dir / "result.json", exp_dir / "worker.log"):
            owner = produced.stat()
            assert (owner.st_uid, owner.st_gid) == (os.getuid(), os.getgid())
    if runner == "docker":  # a fresh container per experiment
        assert {e.container_name for e in manifest.entries} == {
            f"{project}-{e.experiment_id}-c1-a1" for e in manifest.entries
        }
        assert len({e.container_id for e in manifest.entries}) == 4
    else:  # one container for the backend, for the whole campaign
        assert {e.container_name for e in manifest.entries} == {f"{project}-pytorch-1"}
        assert len({e.container_id for e in manifest.entries}) == 1

    env_file = (campaign_dir / "compose.env").read_text(encoding="utf-8").splitlines()
    assert env_file == [
        f"LEM_RESULTS_DIR={campaign_dir.parent}",
        f"LEM_INPUT_DIR={tmp_path.resolve()}",
        f"PUID={os.getuid()}",
        f"PGID={os.getgid()}",
    ]
    for produced in campaign_dir.rglob("*"):
        if produced.is_file():
            assert HF_SENTINEL.encode() not in produced.read_bytes(), produced


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_worker_crash_is_isolated(
    docker: DockerClient, pytorch_image: str, tmp_path: Path, runner: str
) -> None:
    missing_model = tmp_path / "no-such-model"  # visible in the container, but not there
    campaign_file = write(
        tmp_path / "crash.yaml",
        "name: crash\n" + BASE + "experiments:\n"
        f"  - {{model: {missing_model}}}\n  - {LONG}\n  - {{batch_size: 2}}\n",
    )
    with lem_running(
        "campaign", campaign_file, "-o", "out", "--runner", runner, cwd=tmp_path
    ) as proc:
        _, long_entry, container, pid = running_worker(
            docker, tmp_path / "out", runner, max_output_tokens=1500
        )
        kill_worker(docker, container, pid)
        stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr

    campaign_dir = only_campaign_dir(tmp_path / "out")
    bad, crashed, good = load_manifest(campaign_dir).entries
    assert bad.status == "failed"
    assert bad.error == f"BackendError: model directory {missing_model} does not exist"
    record = campaign_dir / Path(bad.exp_path).parent / "error.json"
    assert ErrorRecord.model_validate_json(record.read_bytes()).category == "backend"

    assert crashed.experiment_id == long_entry.experiment_id
    assert crashed.status == "failed"
    assert crashed.error is not None
    assert crashed.error.startswith("worker was killed by SIGKILL without writing a result")
    assert good.status == "done"
    if runner == "docker-persistent":  # the container outlived the worker that crashed in it
        assert good.container_id == crashed.container_id
    assert "2 failed" in stdout


@pytest.mark.parametrize("runner", RUNNERS)
def test_timeout_kills_and_removes_the_container(
    docker: DockerClient, pytorch_image: str, tmp_path: Path, runner: str
) -> None:
    campaign_file = write(
        tmp_path / "slow.yaml",
        f"name: slow\ntimeout_s: 30\n{BASE}experiments:\n  - {LONG}\n  - {TINY}\n",
    )
    with lem_running(
        "campaign", campaign_file, "-o", "out", "--runner", runner, cwd=tmp_path
    ) as proc:
        campaign_dir, long_entry, container, pid = running_worker(
            docker, tmp_path / "out", runner, max_output_tokens=1500
        )
        # What reaches the worker inside its container: the campaign context, nothing more.
        env = worker_env(docker, container, pid)
        assert env["LEM_CAMPAIGN_ID"] == campaign_dir.name
        assert (env["LEM_CYCLE"], env["LEM_TOTAL_CYCLES"]) == ("1", "1")
        assert env["LEM_EXPERIMENT_ID"] == long_entry.experiment_id
        assert "LEM_PARENT_PID" not in env
        inspected = docker.container.inspect(container)
        assert inspected.config.user == f"{os.getuid()}:{os.getgid()}"
        mounts = {m.destination: m.rw for m in inspected.mounts}
        assert mounts[str(campaign_dir.parent)] is True
        assert mounts[str(tmp_path.resolve())] is False
        _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr

    slow, tiny = load_manifest(campaign_dir).entries
    assert slow.status == "failed"
    assert slow.error is not None
    assert slow.error.startswith("timed out after 30 s; worker killed"), slow.error
    with pytest.raises(NoSuchContainer):
        docker.container.inspect(slow.container_id or "")
    assert tiny.status == "done", tiny.error
    assert tiny.container_id != slow.container_id  # a fresh container after the timeout

    # `lem resume` goes through the same runner: the slow one again, as attempt 2.
    resumed = run_lem("resume", campaign_dir, "--runner", runner, "--timeout", "1", cwd=tmp_path)
    assert resumed.returncode == 1, explain(resumed)
    (again, _) = load_manifest(campaign_dir).entries
    assert (again.attempts, again.runner) == (2, runner)
    assert again.error is not None and again.error.startswith("timed out after 1 s")
    if runner == "docker":
        assert again.container_name == container.replace("-a1", "-a2")


@pytest.mark.parametrize("runner", RUNNERS)
def test_ctrl_c_stops_the_campaign_and_its_containers(
    docker: DockerClient, pytorch_image: str, tmp_path: Path, runner: str
) -> None:
    campaign_file = write(tmp_path / "stop.yaml", f"name: stop\n{BASE}experiments:\n  - {LONG}\n")
    with lem_running(
        "campaign", campaign_file, "-o", "out", "--runner", runner, cwd=tmp_path
    ) as proc:
        campaign_dir, *_ = running_worker(docker, tmp_path / "out", runner, n_prompts=64)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    (entry,) = load_manifest(campaign_dir).entries
    assert (entry.status, entry.error) == ("pending", "interrupted by the user")
    assert f"lem resume {campaign_dir}" in stdout
