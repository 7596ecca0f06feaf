"""Both docker runners through the real `lem` CLI, a real engine and real tiny-model inference
in containers: a 2x2 campaign, a worker that crashes, a timeout, Ctrl+C and resume, two workers
at once; after every test no container or network of its campaigns is left."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from docker_helpers import (
    TEST_TAG,
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
from lem_cli import SEEDS_1_2, explain, load_manifest, only_campaign_dir, write
from python_on_whales import DockerClient
from python_on_whales.exceptions import NoSuchContainer
from serving_checks import check_server_gone, serve_campaign

from llenergymeasure.orchestrator.manifest import Manifest, ManifestEntry
from llenergymeasure.orchestrator.runners.docker import project_name
from llenergymeasure.orchestrator.runners.docker_ephemeral import COLD_START
from llenergymeasure.orchestrator.runners.docker_persistent import kill_matching
from llenergymeasure.results.schema import ErrorRecord, ExperimentResult
from llenergymeasure.worker.container_fork import FORKED

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


def result_of(campaign_dir: Path, entry: ManifestEntry) -> ExperimentResult:
    path = campaign_dir / Path(entry.exp_path).parent / "result.json"
    return ExperimentResult.model_validate_json(path.read_bytes())


def fork_of(campaign_dir: Path, entry: ManifestEntry) -> tuple[int, int]:
    """(worker pid, fork server pid) that the container's fork client wrote in the log."""
    log = (campaign_dir / Path(entry.exp_path).parent / "worker.log").read_text()
    found = re.search(r"lem-worker: pid (\d+), forked by the fork server \(pid (\d+)\)", log)
    assert found, log
    return int(found[1]), int(found[2])


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
    results = [result_of(campaign_dir, e) for e in manifest.entries]
    if runner == "docker":  # cold on purpose, and the result says so
        assert {r.worker_start for r in results} == {COLD_START}
    else:  # each a new process forked from the container's server, the engine preloaded
        assert {r.worker_start for r in results} == {FORKED}
        assert all(r.phases_s and r.phases_s.engine_import_s < 0.5 for r in results), [
            r.phases_s for r in results
        ]
        forks = {fork_of(campaign_dir, e) for e in manifest.entries}
        assert len({pid for pid, _ in forks}) == 4, forks
        assert len({server for _, server in forks}) == 1, forks
    if runner == "docker":  # a fresh container per experiment
        assert {e.container_name for e in manifest.entries} == {
            f"{project}-{e.experiment_id}-c1-a1" for e in manifest.entries
        }
        assert len({e.container_id for e in manifest.entries}) == 4
        assert all(e.container_start_s is None for e in manifest.entries)
    else:  # one container for the backend, for the whole campaign
        assert {e.container_name for e in manifest.entries} == {f"{project}-pytorch-1"}
        assert len({e.container_id for e in manifest.entries}) == 1
        # only the first experiment waited for the container to start, and says how long
        first, *later = sorted(manifest.entries, key=lambda e: str(e.started_at))
        assert first.container_start_s is not None and first.container_start_s > 0
        assert all(e.container_start_s is None for e in later)

    env_file = (campaign_dir / "compose.env").read_text(encoding="utf-8").splitlines()
    assert env_file == [
        f"LEM_RESULTS_DIR={campaign_dir.parent}",
        f"LEM_INPUT_DIR={tmp_path.resolve()}",
        f"PUID={os.getuid()}",
        f"PGID={os.getgid()}",
        f"LEM_IMAGE_TAG={TEST_TAG}",  # a hand re-run uses the image lem used
    ]
    for produced in campaign_dir.rglob("*"):
        if produced.is_file():
            assert HF_SENTINEL.encode() not in produced.read_bytes(), produced


def test_a_server_campaign_keeps_one_container_for_its_servers(
    docker: DockerClient, pytorch_image: str, tmp_path: Path
) -> None:
    """docker-persistent with `mode: server`: both experiments' `transformers serve` run in the
    one container the campaign keeps; every level completes; no container or server is left."""
    campaign = serve_campaign(
        "serve", "[{concurrency: 2}]", requests=4, runner="docker-persistent", tail=SEEDS_1_2
    )
    proc = run_lem(
        "campaign", write(tmp_path / "serve.yaml", campaign), "-o", "out", cwd=tmp_path,
        env=image_env(),
    )  # fmt: skip
    assert proc.returncode == 0, explain(proc)
    campaign_dir = only_campaign_dir(tmp_path / "out")
    entries = load_manifest(campaign_dir).entries
    assert [(e.status, e.runner) for e in entries] == [("done", "docker-persistent")] * 2
    assert {e.container_name for e in entries} == {f"{project_name(campaign_dir)}-pytorch-1"}
    assert len({e.container_id for e in entries}) == 1
    rows = pd.read_csv(campaign_dir / "results.csv")
    assert sorted(zip(rows["experiment_id"], rows["level"], strict=True)) == sorted(
        (e.experiment_id, "c2") for e in entries
    )
    assert set(rows["status"]) == {"done"}
    for entry in entries:
        result = result_of(campaign_dir, entry)
        assert result.environment.in_container and result.server is not None
        assert [lv.requests_ok for lv in result.server.levels] == [4]
        check_server_gone(result.server.model_dump(mode="json"), own_pid_namespace=True)


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_worker_crash_is_isolated(
    docker: DockerClient, pytorch_image: str, tmp_path: Path, runner: str
) -> None:
    # the first fails inside its container (no CUDA device there), past the host's pre-flight
    campaign_file = write(
        tmp_path / "crash.yaml",
        "name: crash\n" + BASE + "experiments:\n"
        f"  - {{pytorch: {{device: cuda}}}}\n  - {LONG}\n  - {{batch_size: 2}}\n",
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
    assert bad.error == "BackendError: pytorch.device is 'cuda' but torch sees no CUDA device"
    record = campaign_dir / Path(bad.exp_path).parent / "error.json"
    assert ErrorRecord.model_validate_json(record.read_bytes()).category == "backend"

    assert crashed.experiment_id == long_entry.experiment_id
    assert crashed.status == "failed"
    assert crashed.error is not None
    assert crashed.error.startswith(
        "worker was killed by SIGKILL (not sent by lem: often the kernel's out-of-memory "
        "killer) without writing a result"
    ), crashed.error
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
    # the default results directory, relative: `lem resume` below finds it with no argument
    with lem_running("campaign", campaign_file, "--runner", runner, cwd=tmp_path) as proc:
        campaign_dir, long_entry, container, pid = running_worker(
            docker, tmp_path / "results", runner, max_output_tokens=1500
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

    # `lem resume --retry-failed`, no directory, no --runner: the newest unfinished campaign
    # under ./results, through the runner it recorded; the slow one again, attempt 2.
    resumed = run_lem("resume", "--retry-failed", "--timeout", "1", cwd=tmp_path)
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
        campaign_dir, running, *_ = running_worker(docker, tmp_path / "out", runner, n_prompts=64)
        log = campaign_dir / Path(running.exp_path).parent / "worker.log"
        # once the model is loaded the worker's SIGTERM handler is surely in place
        wait_for("the model to load", lambda: b"loaded in" in log.read_bytes() or None)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    (entry,) = load_manifest(campaign_dir).entries
    # the worker was sent SIGTERM in its container, cleaned up and exited (130)
    assert entry.status == "interrupted", entry.error
    assert entry.error == "interrupted by SIGINT: the worker cleaned up and stopped", stderr
    exp_dir = campaign_dir / Path(entry.exp_path).parent
    assert "interrupted: the experiment was unwound" in (exp_dir / "worker.log").read_text()
    assert f"lem resume {campaign_dir}" in stdout


# --------------------------------------------------- two workers at once (--gpus on a CPU host)

TWO_LONG = f"experiments:\n  - {LONG[:-1]}, seed: 1}}\n  - {LONG[:-1]}, seed: 2}}\n"


@pytest.mark.parametrize("runner", RUNNERS)
def test_ctrl_c_with_two_workers_at_once_removes_everything(
    docker: DockerClient, pytorch_image: str, tmp_path: Path, runner: str
) -> None:
    """The workers run in threads: Ctrl+C reaches the campaign loop, and closing the runner
    must stop both (the autouse fixture checks that no container is left)."""
    campaign_file = write(tmp_path / "two.yaml", f"name: two\n{BASE}{TWO_LONG}")
    args = ("campaign", campaign_file, "-o", "out", "--runner", runner, "--gpus", "0,1")
    with lem_running(*args, cwd=tmp_path) as proc:
        for seed in (1, 2):
            campaign_dir, *_ = running_worker(docker, tmp_path / "out", runner, seed=seed)
        # Workers started at once must not race to create a project network: two of one name
        # make every later run of the campaign fail ("network ... is ambiguous").
        assert networks_of(docker, campaign_dir) == []
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert load_manifest(campaign_dir).counts()["interrupted"] == 2


def test_persistent_container_without_its_fork_server_execs_and_says_so(
    docker: DockerClient, pytorch_image: str, tmp_path: Path
) -> None:
    campaign_file = write(tmp_path / "plain.yaml", f"name: plain\n{BASE}experiments:\n  - {TINY}\n")
    proc = run_lem(
        "campaign", campaign_file, "-o", "out", "--runner", "docker-persistent",
        cwd=tmp_path, env=image_env(LEM_FORK_SERVER="0"),
    )  # fmt: skip
    assert proc.returncode == 0, explain(proc)
    campaign_dir = only_campaign_dir(tmp_path / "out")
    (entry,) = load_manifest(campaign_dir).entries
    result = result_of(campaign_dir, entry)
    assert result.worker_start == "exec: the runner's fork server is off (LEM_FORK_SERVER=0)"
    assert result.output_tokens == 2


def test_a_late_worker_does_not_take_its_neighbour_down(
    docker: DockerClient, pytorch_image: str, tmp_path: Path
) -> None:
    """Two experiments share the persistent container. The first to time out is killed on its
    own while the second still runs; the second, which started a moment later, reaches its
    own time limit rather than dying with the first one's container."""
    campaign_file = write(tmp_path / "late.yaml", f"name: late\ntimeout_s: 20\n{BASE}{TWO_LONG}")
    args = ("campaign", campaign_file, "-o", "out", "--runner", "docker-persistent")
    proc = run_lem(*args, "--gpus", "0,1", cwd=tmp_path)
    assert proc.returncode == 1, explain(proc)
    entries = load_manifest(only_campaign_dir(tmp_path / "out")).entries
    assert len({e.container_id for e in entries}) == 1  # they did share it
    for entry in entries:
        assert entry.error is not None
        assert entry.error.startswith("timed out after 20 s"), entry.error


def test_kill_matching_stops_one_worker_and_what_it_started(
    docker: DockerClient, pytorch_image: str
) -> None:
    a, b = {"a/exp.json", "sleep 300", "sleep 301"}, {"b/exp.json", "sleep 400", "sleep 401"}
    container = docker.run(pytorch_image, ["sleep", "infinity"], detach=True, init=True)
    try:
        for marker, seconds in (("a/exp.json", 300), ("b/exp.json", 400)):
            script = f"sleep {seconds} & sleep {seconds + 1}; :"
            docker.container.execute(container, ["sh", "-c", script, marker], detach=True)
        wait_for("both workers", lambda: (a | b) <= _commands(docker, container.id) or None)
        kill_matching(docker, container.id, "a/exp.json")
        wait_for("worker a to go", lambda: a.isdisjoint(_commands(docker, container.id)) or None)
        assert b <= _commands(docker, container.id)
    finally:
        docker.container.remove(container.id, force=True)


def _commands(docker: DockerClient, container: str) -> set[str]:
    """What runs in the container: each process's arguments, and its command line."""
    script = (
        "import os\n"
        "for p in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try: print(open(f'/proc/{p}/cmdline','rb').read().replace(b'\\0',b' ').decode())\n"
        "    except OSError: pass\n"
    )
    out = str(docker.container.execute(container, ["python", "-c", script]))
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return set(lines) | {arg for line in lines for arg in line.split(" ") if "/" in arg}
