"""The pytorch image and compose.yaml, checked on a real engine: labels, the non-root user and
its uid/gid at build and run time, the shared HF cache, HF_TOKEN passed through."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_helpers import CPU_COMPOSE, build_pytorch, image_env
from python_on_whales import DockerClient

from llenergymeasure.orchestrator.runners.docker import FINGERPRINT_LABEL, PROJECT_LABEL
from llenergymeasure.results.schema import schema_fingerprint

pytestmark = pytest.mark.docker


@pytest.fixture
def project(docker: DockerClient) -> Iterator[str]:
    """A throwaway compose project name; whatever it started is removed afterwards."""
    name = f"lem-test-{uuid.uuid4().hex[:8]}"
    yield name
    label = f"{PROJECT_LABEL}={name}"
    for container in docker.container.list(all=True, filters=[("label", label)]):
        docker.container.remove(container.id, force=True)
    for network in docker.network.list(filters=[("label", label)]):
        docker.network.remove(network)


def compose_run(project: str, *cmd: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        ["docker", "compose", *CPU_COMPOSE, "-p", project, "run", "--rm", "--no-TTY",
         "pytorch", *cmd],
        env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_image_is_labelled_and_runs_as_a_non_root_user(
    docker: DockerClient, pytorch_image: str
) -> None:
    image = docker.image.inspect(pytorch_image)
    labels = image.config.labels or {}
    assert labels[FINGERPRINT_LABEL] == schema_fingerprint()
    assert labels["io.llenergymeasure.backend"] == "pytorch"
    assert image.config.user == "lem"
    out = docker.run(pytorch_image, ["sh", "-c", "id -u; id -g; command -v lem-worker"],
                     remove=True)  # fmt: skip
    assert str(out).split() == ["1000", "1000", "/opt/lem/bin/lem-worker"]


def test_uid_and_gid_can_be_set_at_build_time(docker: DockerClient, pytorch_image: str) -> None:
    """Only the last layers are rebuilt: PUID/PGID come after everything slow."""
    build = build_pytorch(
        "--build-arg", "PUID=4242", "--build-arg", "PGID=4343", LEM_IMAGE_TAG="cpu-test-uid"
    )
    assert build.returncode == 0, build.stderr[-3000:]
    try:
        out = docker.run("llenergymeasure-pytorch:cpu-test-uid", ["id"], remove=True)
        assert "uid=4242(lem) gid=4343(lem)" in str(out)
    finally:
        docker.image.remove("llenergymeasure-pytorch:cpu-test-uid", force=True)


def test_compose_runs_as_puid_with_the_hf_cache_and_token(
    project: str, pytorch_image: str, tmp_path: Path
) -> None:
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    (hf_home / "marker").write_text("cached", encoding="utf-8")
    env = image_env(PUID="4242", PGID="4343", HF_HOME=str(hf_home), HF_TOKEN="hf_sentinel_123")
    out = compose_run(
        project, "sh", "-c", 'id -u; id -g; echo "$HF_TOKEN"; cat "$HF_HOME/marker"', env=env
    )
    assert out.split() == ["4242", "4343", "hf_sentinel_123", "cached"]
    # Without HF_TOKEN in the caller's environment, the container has none either.
    env.pop("HF_TOKEN")
    out = compose_run(project, "sh", "-c", 'echo "token:${HF_TOKEN-unset}"', env=env)
    assert out.strip() == "token:unset"


def test_build_refuses_a_fingerprint_its_code_does_not_have(
    docker: DockerClient, pytorch_image: str
) -> None:
    """The label is what the host trusts, so the build checks it against the code it installs."""
    build = build_pytorch(LEM_IMAGE_TAG="cpu-test-bad", LEM_SCHEMA_FINGERPRINT="0" * 16)
    assert build.returncode != 0
    assert "build with 'make images'" in build.stdout + build.stderr
    assert not docker.image.exists("llenergymeasure-pytorch:cpu-test-bad")
